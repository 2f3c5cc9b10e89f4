"""`POST /api/v1/ingest`: a worker asks for a web page to be captured (contract.md "Ingest").

The request becomes a `page_capture` job in the PostgreSQL queue, keyed by the caller's
`idempotency_key`: the same key and body answer 200 with the first job, another body 409
`idempotency_key_reused`, concurrent duplicates make exactly one job (emlib.jobs). In
production, URLs whose host resolves to a private, loopback or link-local address are refused
(422 `forbidden_target`) so the scraping runner cannot be aimed at the internal network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from emlib.jobs import JobQueue, canonical_request_hash
from emlib.problems import ProblemError
from emlib.signing_http import SignedCaller
from functions.deps import ResourcesDep, SettingsDep

router = APIRouter(tags=["ingest"])
JOB_TYPE = "page_capture"
URL_CHARS_MAX = 2048


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(min_length=8, max_length=URL_CHARS_MAX)]
    idempotency_key: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("only absolute http(s) URLs can be captured")
        return value


class JobAccepted(BaseModel):
    job_id: str
    status: str
    idempotency_key: str


def _is_internal(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast


async def _refuse_internal_targets(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        infos = await asyncio.to_thread(socket.getaddrinfo, host, None)
    except OSError as exc:
        raise ProblemError(422, "unresolvable_target", f"cannot resolve {host}") from exc
    if any(_is_internal(str(info[4][0])) for info in infos):
        raise ProblemError(422, "forbidden_target", f"{host} resolves to a non-public address")


@router.post(
    "/api/v1/ingest",
    status_code=202,
    response_model=JobAccepted,
    responses={200: {"model": JobAccepted, "description": "the same key and body again: the first job"}},
)
async def ingest(
    body: IngestRequest,
    caller: SignedCaller,
    resources: ResourcesDep,
    settings: SettingsDep,
    response: Response,
) -> JobAccepted:
    """Queue a page capture; idempotent by `idempotency_key`."""
    if settings.app_env == "production":
        await _refuse_internal_targets(body.url)
    payload = {"url": body.url, "metadata": body.metadata, "requested_by": caller}
    request_hash = canonical_request_hash(body.model_dump())
    queue = JobQueue(resources.pool)
    result = await asyncio.to_thread(queue.submit, JOB_TYPE, body.idempotency_key, payload, request_hash)
    if not result.created:
        response.status_code = 200
    return JobAccepted(
        job_id=result.job.id, status=result.job.status, idempotency_key=result.job.idempotency_key
    )
