"""`POST /api/v1/admin/action`: the human decisions that move a market through its lifecycle.

Problem: creating, opening, halting, closing and resolving a market changes two systems (this
database and the orderbook host) and must leave exactly one signed audit event per decision,
even when a call fails half-way. Each action runs as:

    1. one DB transaction; lock the market row (SELECT ... FOR UPDATE: concurrent admins on
       one market queue up; the DB status decides whether the transition is allowed);
    2. the signed host call (create halted / set status / resolve), inside that transaction;
       a refusal rolls everything back and is answered with the host's code;
    3. the audit event (`AuditLog.append(conn=...)`), then the market row and its timeline
       rows, all committed together.

If the commit fails after the host applied the change, the DB still shows the old status, so
the admin's retry is allowed again; the host then answers `market_exists` or
`invalid_status_transition`, and when the host's market already is what the action asks for
(same grid / status / settlement price) that refusal is taken as success ("converged": true).
The host never moves a market on its own, so host state "ahead" of the DB can only come from
such a lost commit.

Political markets need approvals from two different admins: the first approval is recorded
(status stays `requested`, answer `"status": "pending_second_approval"`); the second creates
the market. Every action needs `X-TOTP` (`AdminUser`). Result codes, one heading each:
docs/specs/admin_actions.md.

Also here: `signed_or_admin`, the guard of `GET /api/v1/admin/audit/verify` (an HMAC-signed
service call, or an admin session with a fresh TOTP code).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from emlib.audit import AuditLog
from emlib.problems import ProblemError
from emlib.resources import Resources
from emlib.signing_http import signed_caller
from functions import markets as m
from functions.auth import AdminUser, Principal, check_second_factor, get_current_user
from functions.deps import OrderbookDep, ResourcesDep
from functions.orderbook_client import OrderbookClient, OrderbookError

router = APIRouter(tags=["admin"])
_log = logging.getLogger("functions.admin")

ActionName = Literal[
    "approve_market", "reject_market", "open_market", "halt_market", "close_market", "resolve_market"
]
RiskLevel = Literal["low", "medium", "high"]
_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
PENDING_SECOND_APPROVAL = "pending_second_approval"


class AdminActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: ActionName
    target: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    params: dict[str, Any] = Field(default_factory=dict)
    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500, pattern=_TEXT)
    ]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApproveParams(_Closed):
    risk_level: RiskLevel
    # Scalar markets only: the admin may correct the requested grid before it is created.
    tick_size: Annotated[StrictInt, Field(ge=1, le=m.PRICE_MAX)] | None = None
    price_min: Annotated[StrictInt, Field(ge=0, le=m.PRICE_MAX)] | None = None
    price_max: Annotated[StrictInt, Field(ge=0, le=m.PRICE_MAX)] | None = None
    multiplier_minor: Annotated[StrictInt, Field(ge=1, le=1_000_000)] | None = None


class NoParams(_Closed):
    pass


class ResolveParams(_Closed):
    settlement_price: Annotated[StrictInt, Field(ge=0, le=m.PRICE_MAX)]


_PARAMS: dict[str, TypeAdapter[Any]] = {
    "approve_market": TypeAdapter(ApproveParams),
    "reject_market": TypeAdapter(NoParams),
    "open_market": TypeAdapter(NoParams),
    "halt_market": TypeAdapter(NoParams),
    "close_market": TypeAdapter(NoParams),
    "resolve_market": TypeAdapter(ResolveParams),
}
_PARAM_CODES = {
    "extra_forbidden": "unknown_field",
    "missing": "missing_field",
    "literal_error": "invalid_enum",
}


class AdminActionResult(BaseModel):
    audit_event_id: str
    action: ActionName
    target: str
    # The market's status after the action, or "pending_second_approval".
    status: str
    market_status: str
    approvals: int
    approvals_required: int
    # True when the host already had the requested state (a retry after a lost commit).
    converged: bool = False


def parse_params(action: str, params: dict[str, Any]) -> Any:
    try:
        return _PARAMS[action].validate_python(params)
    except ValidationError as exc:
        errors = [
            {"loc": ["params", *(str(p) for p in e["loc"])], "type": e["type"], "msg": e["msg"]}
            for e in exc.errors()
        ]
        first = str(errors[0]["type"]) if errors else ""
        code = _PARAM_CODES.get(first, "validation_error")
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
        raise ProblemError(422, code, detail, extra={"errors": errors[:20]}) from None


class _Action:
    """One admin action on one locked market row, inside one transaction."""

    def __init__(
        self,
        conn: m.Conn,
        audit: AuditLog,
        orderbook: OrderbookClient,
        admin: Principal,
        body: AdminActionRequest,
        market: dict[str, Any],
    ) -> None:
        self.conn = conn
        self.audit = audit
        self.orderbook = orderbook
        self.admin = admin
        self.body = body
        self.market = market
        self.symbol: str = market["symbol"]
        self.converged = False

    # -- host calls, with convergence on an already-applied state

    def host(
        self, call: Callable[[], object], refusal: str, applied: Callable[[dict[str, Any]], bool]
    ) -> None:
        try:
            call()
        except OrderbookError as exc:
            if exc.code != refusal or not self._host_state_is(applied):
                raise
            _log.warning("host already applied %s on %s: converging", self.body.action, self.symbol)
            self.converged = True

    def _host_state_is(self, applied: Callable[[dict[str, Any]], bool]) -> bool:
        try:
            snapshot = self.orderbook.snapshot(self.symbol, depth=1)
        except OrderbookError:
            return False
        market = snapshot.get("market")
        return isinstance(market, dict) and applied(market)

    # -- records

    def record(self, to_status: str, extra: dict[str, Any] | None = None) -> str:
        """Append the audit event (this transaction) and return its id."""
        payload: dict[str, Any] = {
            "params": self.body.params,
            "reason": self.body.reason,
            "from_status": self.market["status"],
            "to_status": to_status,
            **(extra or {}),
        }
        event = self.audit.append(
            actor=self.admin.user_id,
            action=self.body.action,
            target=self.symbol,
            payload=payload,
            conn=self.conn,
        )
        return event.id

    def event(
        self, name: str, from_status: str, to_status: str, audit_id: str, detail: dict[str, Any]
    ) -> None:
        m.add_event(
            self.conn,
            self.symbol,
            name,
            from_status,
            to_status,
            self.admin.user_id,
            self.body.reason,
            audit_id,
            detail,
        )

    def result(self, audit_id: str, status: str, market_status: str, approvals: int) -> AdminActionResult:
        return AdminActionResult(
            audit_event_id=audit_id,
            action=self.body.action,
            target=self.symbol,
            status=status,
            market_status=market_status,
            approvals=approvals,
            approvals_required=m.required_approvals(self.market["type"]),
            converged=self.converged,
        )

    # -- actions

    def approve(self, params: ApproveParams) -> AdminActionResult:
        mk = self.market
        overrides = {k: v for k, v in params.model_dump().items() if k != "risk_level" and v is not None}
        if mk["kind"] == "binary" and overrides:
            raise ProblemError(422, "invalid_bounds", "a binary market's grid and multiplier are fixed")
        grid = {
            k: overrides.get(k, mk[k]) for k in ("tick_size", "price_min", "price_max", "multiplier_minor")
        }
        problem = m.bounds_problem(mk["kind"], grid["tick_size"], grid["price_min"], grid["price_max"])
        if problem is not None:
            raise ProblemError(422, "invalid_bounds", problem)
        decision = {"risk_level": params.risk_level, **grid}
        earlier = m.approvals(self.conn, self.symbol)
        if any(a["admin_id"] == self.admin.user_id for a in earlier):
            raise ProblemError(
                409, "same_admin", "this admin already approved; a different admin must approve"
            )
        for a in earlier:
            theirs = {"risk_level": a["risk_level"], **a["params"]["grid"]}
            if theirs != decision:
                raise ProblemError(
                    409,
                    "approval_mismatch",
                    "the approvals disagree on risk level or grid; reject and re-request, or match the first",
                    extra={"first_approval": theirs},
                )
        count = len(earlier) + 1
        required = m.required_approvals(mk["type"])
        stored = {"grid": grid, "overrides": overrides}
        if count < required:
            audit_id = self.record("requested", {"approval": count, "approvals_required": required})
            m.add_approval(self.conn, self.symbol, self.admin.user_id, audit_id, params.risk_level, stored)
            self.event(
                "approval_recorded", "requested", "requested", audit_id, {"approval": count, **decision}
            )
            return self.result(audit_id, PENDING_SECOND_APPROVAL, "requested", count)

        def same_market(host: dict[str, Any]) -> bool:
            return all(host.get(k) == v for k, v in grid.items()) and host.get("kind") == mk["kind"]

        # Created halted: trading starts only with an explicit open_market.
        self.host(
            lambda: self.orderbook.create_market(
                {"symbol": self.symbol, "kind": mk["kind"], **grid, "allow_short": True, "status": "halted"}
            ),
            "market_exists",
            same_market,
        )
        audit_id = self.record("approved", {"approval": count, "approvals_required": required})
        m.add_approval(self.conn, self.symbol, self.admin.user_id, audit_id, params.risk_level, stored)
        m.set_status(
            self.conn,
            self.symbol,
            "approved",
            risk_level=params.risk_level,
            human_approval_audit_id=audit_id,
            **grid,
        )
        self.event("approved", "requested", "approved", audit_id, {"approval": count, **decision})
        return self.result(audit_id, "approved", "approved", count)

    def reject(self) -> AdminActionResult:
        # A requested market was never sent to the host: nothing to undo there.
        audit_id = self.record("rejected")
        m.set_status(self.conn, self.symbol, "rejected")
        self.event("rejected", "requested", "rejected", audit_id, {})
        return self.result(audit_id, "rejected", "rejected", len(m.approvals(self.conn, self.symbol)))

    def set_status(self, target: str) -> AdminActionResult:
        host_status = m.HOST_STATUS[target]
        self.host(
            lambda: self.orderbook.set_market_status(self.symbol, host_status),
            "invalid_status_transition",
            lambda host: host.get("status") == host_status,
        )
        audit_id = self.record(target)
        m.set_status(self.conn, self.symbol, target)
        self.event(m.TRANSITIONS[self.body.action].event, self.market["status"], target, audit_id, {})
        return self.result(audit_id, target, target, len(m.approvals(self.conn, self.symbol)))

    def resolve(self, params: ResolveParams) -> AdminActionResult:
        mk = self.market
        price = params.settlement_price
        problem = m.settlement_problem(mk["kind"], mk["tick_size"], mk["price_min"], mk["price_max"], price)
        if problem is not None:
            raise ProblemError(422, "invalid_settlement_price", problem)
        self.host(
            lambda: self.orderbook.resolve_market(self.symbol, price),
            "invalid_status_transition",
            lambda host: host.get("status") == "settled" and host.get("settlement_price") == price,
        )
        audit_id = self.record("settled", {"settlement_price": price})
        m.set_status(self.conn, self.symbol, "settled", settlement_price=price)
        detail = {"settlement_price": price}
        self.event("resolved", "closed", "resolved", audit_id, detail)
        self.event("settled", "resolved", "settled", audit_id, detail)
        return self.result(audit_id, "settled", "settled", len(m.approvals(self.conn, self.symbol)))


def perform_action(
    resources: Resources, orderbook: OrderbookClient, admin: Principal, body: AdminActionRequest
) -> AdminActionResult:
    """Run one admin action (see the module docstring for the ordering)."""
    params = parse_params(body.action, body.params)
    if not m.is_symbol(body.target):
        raise ProblemError(404, "unknown_market", f"no market {body.target!r}")
    with resources.pool.connection() as conn:
        market = m.get_market(conn, body.target, for_update=True)
        if market is None:
            raise ProblemError(404, "unknown_market", f"no market {body.target}")
        if not m.transition_allowed(body.action, market["status"]):
            raise ProblemError(
                409,
                "invalid_status_transition",
                f"{body.action} is not allowed in status {market['status']}",
                extra={"market_status": market["status"]},
            )
        action = _Action(conn, resources.audit_log(), orderbook, admin, body, market)
        if body.action == "approve_market":
            return action.approve(params)
        if body.action == "reject_market":
            return action.reject()
        if body.action == "resolve_market":
            return action.resolve(params)
        return action.set_status(m.TRANSITIONS[body.action].target)


@router.post("/api/v1/admin/action", status_code=201, response_model=AdminActionResult)
def admin_action(
    body: AdminActionRequest, admin: AdminUser, resources: ResourcesDep, orderbook: OrderbookDep
) -> AdminActionResult:
    """An admin decision on a market (needs `X-TOTP`); writes one hash-chained audit event."""
    return perform_action(resources, orderbook, admin, body)


# ---------------------------------------------------------------- audit verify guard


def _admin_session(request: Request) -> Principal:
    principal = get_current_user(request)
    if not principal.is_admin:
        raise ProblemError(403, "forbidden", "needs role admin or higher")
    check_second_factor(request, principal)
    return principal


async def signed_or_admin(request: Request) -> str:
    """An admin session (bearer token + `X-TOTP`) when an Authorization header is sent,
    otherwise an HMAC-signed service call. Returns the caller (user id or key id)."""
    if "authorization" in request.headers:
        principal = await run_in_threadpool(_admin_session, request)
        return principal.user_id
    return await signed_caller(request)
