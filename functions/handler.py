"""AWS Lambda entry point: the same ASGI app behind API Gateway HTTP API (v2 events)."""

from mangum import Mangum

from functions.app import app

handler = Mangum(app, lifespan="off")
