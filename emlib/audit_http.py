"""`GET /api/v1/admin/audit/verify`: the audit check as an admin endpoint.

A router factory, so the app that mounts it decides how the log is reached (an
`AuditLog`, or a function returning one for apps that build their pool lazily) and how
admins are authenticated (`guard`, a FastAPI dependency run before the route). A broken
chain is an answer, not an error: 200 with `"ok": false` and the first bad seq.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from emlib.audit import AuditLog


class AuditVerifyResponse(BaseModel):
    ok: bool
    events: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None
    detail: str = ""


def make_audit_router(
    audit: AuditLog | Callable[[], AuditLog],
    *,
    guard: Callable[..., Any] | None = None,
) -> APIRouter:
    dependencies = [Depends(guard)] if guard is not None else []
    router = APIRouter(prefix="/api/v1/admin/audit", tags=["admin"], dependencies=dependencies)

    @router.get("/verify", response_model=AuditVerifyResponse)
    def verify_audit_log() -> AuditVerifyResponse:
        """Verify the whole audit log: hash chain, every HMAC, the signed head."""
        log = audit if isinstance(audit, AuditLog) else audit()
        return AuditVerifyResponse(**log.verify().to_dict())

    return router
