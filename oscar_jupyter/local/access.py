"""Who may see what, as OSCAR v4.1.2 decides it for OIDC (Bearer) callers; the Basic admin sees
and changes everything. Each rule names the upstream file it follows (grycap/oscar v4.1.2, gin
v1.9.1; line numbers of that tag).

The job routes (`pkg/handlers/logs.go`) all start with `getAuthorizedService` (565-581), which
answers 404 itself when the service does not exist and writes nothing when `authorizeRequest`
(583-613) says the caller may not use it. What each route then does:

| route | service the caller may not use | job of a usable service, owned by another user |
|---|---|---|
| `GET /system/logs/{svc}` (69-72, 74-85) | 200, empty body | not listed (owner label) |
| `GET /system/logs/{svc}/{job}` (262-265, 275-277) | 200, empty body | 200 with its log |
| `DELETE /system/logs/{svc}/{job}` (517-520, 526-541) | 403 | 204, deleted |
| `DELETE /system/logs/{svc}` (200-203, 213-220) | 200, empty body | deleted with the rest |
"""

from __future__ import annotations

from typing import Any

from .services import ApiError
from .users import Caller

PUBLIC, PRIVATE, RESTRICTED = "public", "private", "restricted"

# pkg/handlers/logs.go 519 (MakeDeleteJobHandler)
DELETE_JOB_FORBIDDEN_TEXT = "You do not have permission to access this service"


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
    """`pkg/handlers/logs.go` `authorizeRequest` (583-613): Basic always; a Bearer caller when
    the service is public, is theirs, or is restricted and lists them in `allowed_users`. The
    job's own owner is never looked at (only the listing filters by it)."""
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


def check_jobs_service(service: dict[str, Any] | None, caller: Caller) -> dict[str, Any]:
    """Job listing, job log and delete-all (`pkg/handlers/logs.go` 69-72, 262-265, 200-203):
    no such service is 404; a service the caller may not use gets gin's default answer."""
    if service is None:
        raise ApiError(404)  # logs.go 568-569
    if not may_use_jobs(service, caller):
        raise Unanswered()
    return service


def check_delete_job(service: dict[str, Any] | None, caller: Caller) -> dict[str, Any]:
    """`DELETE /system/logs/{svc}/{job}` (`pkg/handlers/logs.go` 517-520): when
    `getAuthorizedService` fails the handler writes 403 itself. That holds for a missing
    service too: the 404 `getAuthorizedService` set was not written yet, and gin keeps the
    last status set before the body (`response_writer.go` `WriteHeader`), so even the Basic
    admin gets 403 there."""
    if service is None or not may_use_jobs(service, caller):
        raise ApiError(403, DELETE_JOB_FORBIDDEN_TEXT)
    return service


class Unanswered(ApiError):
    """`logs.go` `getAuthorizedService` returns without writing when the caller may not use
    the service, and the listing, log and delete-all handlers then return too, so gin sends
    its default: 200 with an empty body."""

    def __init__(self) -> None:
        super().__init__(200)
