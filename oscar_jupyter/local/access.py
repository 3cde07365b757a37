"""Who may see what, as OSCAR v4.1.2 decides it for OIDC (Bearer) callers; the Basic admin sees
and changes everything. Each rule names the upstream file it follows."""

from __future__ import annotations

from typing import Any

from .services import ApiError
from .users import Caller

PUBLIC, PRIVATE, RESTRICTED = "public", "private", "restricted"


def may_read(service: dict[str, Any], caller: Caller) -> bool:
    """`pkg/handlers/read.go` / `list.go`: public to all; private to the owner; restricted to
    the owner and `allowed_users`; any other visibility to nobody."""
    if caller.is_admin:
        return True
    visibility = service.get("visibility")
    if visibility == PUBLIC:
        return True
    if visibility == PRIVATE:
        return service.get("owner") == caller.uid
    if visibility == RESTRICTED:
        return service.get("owner") == caller.uid or caller.uid in (
            service.get("allowed_users") or []
        )
    return False


def may_use_jobs(service: dict[str, Any], caller: Caller) -> bool:
    """`pkg/handlers/logs.go` `authorizeRequest` (job listing, logs, job deletion)."""
    if caller.is_admin or service.get("visibility") == PUBLIC:
        return True
    if caller.uid == service.get("owner"):
        return True
    return service.get("visibility") == RESTRICTED and caller.uid in (
        service.get("allowed_users") or []
    )


def check_read(service: dict[str, Any], caller: Caller) -> None:
    if not may_read(service, caller):
        raise ApiError(403, f"User {caller.uid} doesn't have permision to get this service")


def check_owner(service: dict[str, Any], caller: Caller, verb: str) -> None:
    """`pkg/handlers/update.go` ("modify") and `delete.go` ("delete"): owner only for OIDC."""
    if not caller.is_admin and service.get("owner") != caller.uid:
        raise ApiError(403, f"User {caller.uid} doesn't have permision to {verb} this service")


class Unanswered(ApiError):
    """`logs.go` `getAuthorizedService` returns without writing when the caller may not see the
    service's jobs, so gin sends its default: 200 with an empty body."""

    def __init__(self) -> None:
        super().__init__(200)
