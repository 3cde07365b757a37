"""A real HTTP server on loopback that answers like OSCAR (OSCAR.md sections 2-3) and like a
Keycloak token endpoint, recording every request it gets.

As strict as OSCAR v4.1.2 about owners (OSCAR.md section 12): a service belongs to the OIDC `sub`
that created it (`cluster_admin` for basic auth) and is private unless `visibility` says otherwise;
an OIDC caller gets 403 on another owner's private service (read, delete, job listing) and sees
only its own jobs in a listing; names are unique cluster-wide (400 "A service with the provided
name already exists"); listings come in pages of 70 (`page`, `next_page`).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ADMIN_USER = "oscar"
ADMIN_PASSWORD = "pw-Adm1n-9c41f"
REALM = "/realms/test"
TOKEN_PATH = REALM + "/protocol/openid-connect/token"
DEFAULT_OWNER = "cluster_admin"  # OSCAR's owner of services created with basic auth
JOB_LISTING_LIMIT = 70


def jwt_claims(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return {}
    return claims if isinstance(claims, dict) else {}


def make_jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        raw = json.dumps(obj).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeOscar:
    """What the server knows; tests change it directly (the handler reads it under `lock`)."""

    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[Seen] = field(default_factory=list)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    page_size: int = JOB_LISTING_LIMIT  # 0: one page
    job_owners: dict[tuple[str, str], str] = field(default_factory=dict)  # OIDC submitter's sub
    legacy_listing: bool = False  # pre-v3.6.4 bare map
    # (method, path) -> statuses to answer before serving normally
    failures: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    access_tokens: set[str] = field(default_factory=set)  # valid OIDC access tokens
    provisioned: set[str] = field(default_factory=set)  # tokens that called /system
    refresh_tokens: set[str] = field(default_factory=set)
    issued: list[str] = field(default_factory=list)
    token_lifetime: int = 300
    redirect_to: str | None = None  # answer everything with 308 to this base URL
    echo_credentials: bool = False  # a careless server that repeats rejected credentials
    drop_delegated_id: bool = False  # X-Delegated-Job-ID lost on the way (e.g. by an ingress)
    interlink_available: bool = True  # false: OSCAR ignores interlink_node_name (OSCAR.md 1.13)
    info: dict[str, Any] = field(
        default_factory=lambda: {
            "version": "v4.1.2",
            "git_commit": "7ade09ee",
            "architecture": "amd64",
            "kubernetes_version": "v1.30.0",
        }
    )

    def seen(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)
            ]

    def refresh_token(self, **extra: Any) -> str:
        claims = {
            "iss": self.url + REALM,
            "azp": "oscar-client",
            "scope": "openid profile",
            "typ": "Refresh",
            "jti": secrets.token_hex(4),
            **extra,
        }
        token = make_jwt(claims)
        self.refresh_tokens.add(token)
        return token

    def user_token(self, sub: str, lifetime: int = 3600) -> str:
        """A valid OIDC access token of user `sub` (as an IdP would issue it)."""
        token = make_jwt(
            {
                "iss": self.url + REALM,
                "sub": sub,
                "exp": time.time() + lifetime,
                "jti": secrets.token_hex(4),
            }
        )
        with self.lock:
            self.access_tokens.add(token)
        return token

    def add_service(self, name: str, **fields: Any) -> dict[str, Any]:
        service = {
            "name": name,
            "image": "python:3.11",
            "script": "echo hi",
            "token": secrets.token_hex(32),
            "owner": DEFAULT_OWNER,
            "visibility": "private",
            **fields,
        }
        with self.lock:
            self.services[name] = service
            self.jobs.setdefault(name, {})
        return service


class OscarHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    state: FakeOscar

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _answer(self, status: int, body: Any = b"", content_type: str = "text/plain") -> None:
        if isinstance(body, (dict, list)):
            body, content_type = json.dumps(body).encode(), "application/json"
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="Authorization Required"')
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        state = self.state
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = Seen(
            self.command,
            path,
            parse_qs(parts.query),
            {k.lower(): v for k, v in self.headers.items()},
            body,
        )
        with state.lock:
            state.requests.append(seen)
            queued = state.failures.get((self.command, path))
            forced = queued.pop(0) if queued else None
        if forced is not None:
            return self._answer(forced, f"forced {forced}")
        if state.redirect_to:
            self.send_response(308)
            self.send_header("Location", state.redirect_to + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if path == TOKEN_PATH and self.command == "POST":
            return self._token(seen)
        if path == "/health":
            return self._answer(200, "Ok")
        if path.startswith("/job/") and self.command == "POST":
            return self._job(path[len("/job/") :], seen)
        if path.startswith("/system/"):
            who = self._system_identity(seen)
            if who is None:
                return self._answer(401, self._echo(seen) if state.echo_credentials else "")
            with state.lock:
                if who != "admin":
                    state.provisioned.add(who)
            return self._system(path, seen, None if who == "admin" else self._uid(who))
        return self._answer(404, "404 page not found")

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    @staticmethod
    def _echo(seen: Seen) -> str:
        auth = seen.headers.get("authorization", "")
        if auth.startswith("Basic "):
            return f"invalid credentials {base64.b64decode(auth[6:]).decode()}"
        return f"token {auth[7:]} is not valid"

    def _system_identity(self, seen: Seen) -> str | None:
        auth = seen.headers.get("authorization", "")
        if auth.startswith("Basic "):
            pair = base64.b64decode(auth[6:]).decode()
            return "admin" if pair == f"{ADMIN_USER}:{ADMIN_PASSWORD}" else None
        if auth.startswith("Bearer "):
            token = auth[7:]
            return token if token in self.state.access_tokens else None
        return None

    @staticmethod
    def _uid(token: str) -> str:
        """OSCAR's user id of a bearer token: its `sub` (a token without one is its own id)."""
        return str(jwt_claims(token).get("sub") or token)

    def _token(self, seen: Seen) -> None:
        state = self.state
        form = {k: v[0] for k, v in parse_qs(seen.body.decode()).items()}
        if (
            form.get("grant_type") != "refresh_token"
            or form.get("client_id") != "oscar-client"
            or form.get("scope") != "openid profile"
        ):
            return self._answer(400, {"error": "invalid_request", "error_description": "bad form"})
        if form.get("refresh_token") not in state.refresh_tokens:
            said = (
                f"Token {form.get('refresh_token')} is not active"
                if state.echo_credentials
                else "Token is not active"
            )
            return self._answer(400, {"error": "invalid_grant", "error_description": said})
        access = make_jwt(
            {
                "iss": state.url + REALM,
                "exp": time.time() + state.token_lifetime,
                "n": len(state.issued),
            }
        )
        with state.lock:
            state.access_tokens.add(access)
            state.issued.append(access)
        return self._answer(
            200,
            {"access_token": access, "expires_in": state.token_lifetime, "token_type": "Bearer"},
        )

    def _job(self, name: str, seen: Seen) -> None:
        state = self.state
        auth = seen.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return self._answer(401, "")
        token = auth[7:]
        service = state.services.get(name)
        if service is None:
            return self._answer(404, f'The service "{name}" does not exist')
        if len(token) == 64:
            if token != service["token"]:
                return self._answer(401, "")
        elif token not in state.access_tokens:
            return self._answer(401, "")
        elif token not in state.provisioned:
            return self._answer(403, "MinIO user not provisioned, submit a direct request first")
        delegated = None if state.drop_delegated_id else seen.headers.get("x-delegated-job-id")
        job = delegated or f"{name}-{secrets.token_hex(8)}"
        with state.lock:
            if job in state.jobs[name]:
                return self._answer(500, f'jobs.batch "{job}" already exists')
            state.jobs[name][job] = {"status": "Pending"}
            state.logs[(name, job)] = ""
            if len(token) != 64:  # OSCAR labels a job with its OIDC submitter
                state.job_owners[(name, job)] = self._uid(token)
        return self._answer(201, "")

    def _system(self, path: str, seen: Seen, uid: str | None) -> None:
        """`uid`: the OIDC caller's id, None for the (basic-auth) admin."""
        state, method = self.state, seen.method
        segments = path.strip("/").split("/")[1:]
        if segments == ["info"] and method == "GET":
            return self._answer(200, state.info)
        if segments == ["config"] and method == "GET":
            return self._answer(
                200,
                {
                    "config": {"name": "oscar", "interLink_available": state.interlink_available},
                    "minio_provider": {"secret_key": "minio-secret"},
                },
            )
        if segments == ["status"] and method == "GET":
            return self._answer(200, {"cluster": {"nodes_count": 1, "nodes": []}})
        if segments[:1] == ["services"]:
            return self._services(segments[1:], seen, uid)
        if segments[:1] == ["logs"] and len(segments) >= 2:
            return self._logs(segments[1], segments[2] if len(segments) > 2 else None, seen, uid)
        return self._answer(404, "404 page not found")

    @staticmethod
    def _may_read(service: dict[str, Any], uid: str | None) -> bool:
        return uid is None or service.get("owner") == uid or service.get("visibility") == "public"

    def _services(self, rest: list[str], seen: Seen, uid: str | None) -> None:
        state, method = self.state, seen.method
        if not rest and method == "GET":
            return self._answer(200, [s for s in state.services.values() if self._may_read(s, uid)])
        if not rest and method in ("POST", "PUT"):
            definition = json.loads(seen.body)
            name = definition.get("name", "")
            exists = name in state.services
            if method == "POST" and exists:
                return self._answer(400, "A service with the provided name already exists")
            if method == "PUT" and not exists:
                return self._answer(404, f'The service "{name}" does not exist')
            if method == "PUT" and uid is not None and state.services[name]["owner"] != uid:
                return self._answer(403, f"User {uid} doesn't have permision to edit this service")
            token = state.services[name]["token"] if exists else secrets.token_hex(32)
            owner = state.services[name]["owner"] if exists else (uid or DEFAULT_OWNER)
            definition.pop("name")
            state.add_service(
                name, **{"visibility": "private", **definition, "token": token, "owner": owner}
            )
            return self._answer(201 if method == "POST" else 204, "")
        if len(rest) == 1:
            service = state.services.get(rest[0])
            if service is None:
                return self._answer(404, f'The service "{rest[0]}" does not exist')
            if method == "GET":
                if not self._may_read(service, uid):
                    return self._answer(
                        403, f"User {uid} doesn't have permision to get this service"
                    )
                return self._answer(200, service)
            if method == "DELETE":
                if uid is not None and service["owner"] != uid:
                    return self._answer(
                        403, f"User {uid} doesn't have permision to delete this service"
                    )
                with state.lock:
                    del state.services[rest[0]]
                    state.jobs.pop(rest[0], None)
                return self._answer(204, "")
        return self._answer(405, "method not allowed")

    def _logs(self, name: str, job: str | None, seen: Seen, uid: str | None) -> None:
        state, method = self.state, seen.method
        if name not in state.services:
            return self._answer(404, f'The service "{name}" does not exist')
        if not self._may_read(state.services[name], uid):
            return self._answer(403, f"User {uid} doesn't have permision to get this service")
        jobs = state.jobs[name]
        if uid is not None:  # OIDC callers see (and touch) only their own jobs
            jobs = {n: j for n, j in jobs.items() if state.job_owners.get((name, n)) == uid}
        if job is None and method == "GET":
            if state.legacy_listing:
                return self._answer(200, dict(jobs))
            names = sorted(jobs)
            start = int(seen.query.get("page", ["0"])[0] or 0)
            size = state.page_size or len(names) or 1
            chunk = names[start : start + size]
            answer: dict[str, Any] = {"jobs": {n: jobs[n] for n in chunk}}
            if start + size < len(names):
                answer["next_page"] = str(start + size)
                answer["remaining_jobs"] = len(names) - start - size
            return self._answer(200, answer)
        if job is None and method == "DELETE":
            everything = seen.query.get("all", ["false"])[0] == "true"
            with state.lock:
                for n in [n for n, j in jobs.items() if everything or j["status"] == "Succeeded"]:
                    del state.jobs[name][n]
            return self._answer(204, "")
        if job not in jobs:
            return self._answer(404, f'The job "{job}" does not exist')
        if method == "GET":
            return self._answer(200, state.logs.get((name, job), ""))
        if method == "DELETE":
            with state.lock:
                del state.jobs[name][job]
            return self._answer(204, "")
        return self._answer(405, "method not allowed")
