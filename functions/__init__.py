"""The public HTTP API: stateless FastAPI, served by uvicorn locally and by Lambda via Mangum."""
