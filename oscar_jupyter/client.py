"""OSCAR REST calls over httpx.

Authentication follows OSCAR's rules (OSCAR.md section 2): ``/system/*`` takes Basic or an OIDC
bearer token; ``/job/*`` takes only a bearer token, the OIDC token when the profile has one,
else the service's own token (read once from ``GET /system/services/{name}``).

Errors carry the server's own text and never a secret.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from oscar_jupyter import __version__
from oscar_jupyter.config import (
    ClusterProfile,
    ConfigError,
    Secret,
    agent_access_token,
    jwt_claims,
    refresh_access_token,
)

__all__ = ["OscarClient", "OscarError"]

_RETRY_STATUSES = frozenset({502, 503, 504})
# A GET may be sent again after any of these; other methods only when nothing was sent.
_GET_RETRY_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
)
_UNSENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)
_MESSAGE_LIMIT = 500
_MAX_PAGES = 1000
_TOKEN_MARGIN_SECONDS = 30
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class OscarError(Exception):
    """OSCAR answered with an error, or could not be reached (``status_code`` None)."""

    def __init__(
        self,
        status_code: int | None,
        method: str,
        path: str,
        message: str,
        *,
        endpoint: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(status_code, method, path, message)
        self.status_code = status_code
        self.method = method
        self.path = path
        self.message = message
        self.endpoint = endpoint
        self.hint = hint

    def __str__(self) -> str:
        if self.status_code is None:
            text = (
                f"Cannot reach OSCAR at {self.endpoint} ({self.method} {self.path}): {self.message}"
            )
        else:
            text = f"OSCAR answered {self.status_code} on {self.method} {self.path}: {self.message}"
        return f"{text}; {self.hint}" if self.hint else text

    def __repr__(self) -> str:
        return f"OscarError({self.status_code!r}, {self.method!r}, {self.path!r}, {self.message!r})"

    def _render_traceback_(self) -> list[str]:
        return [f"OscarError: {self}"]


def _check_name(value: Any, what: str, limit: int = 253) -> str:
    if not isinstance(value, str) or not _K8S_NAME.match(value) or len(value) > limit:
        raise ValueError(
            f"{what} {value!r} is not valid: use lowercase letters, digits, '-' and "
            f"'.', starting and ending with a letter or digit, at most {limit} "
            "characters"
        )
    return value


def _jwt_expiry(token: Secret) -> float | None:
    """The ``exp`` claim of a JWT access token, read without verification, or None."""
    exp = (jwt_claims(token) or {}).get("exp")
    return float(exp) if isinstance(exp, (int, float)) else None


class OscarClient:
    """One OSCAR cluster's REST API. Safe to share between the main thread and a poller."""

    def __init__(
        self,
        profile: ClusterProfile,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        retries: int = 2,
        backoff: float = 0.25,
    ) -> None:
        if not isinstance(profile, ClusterProfile):
            raise TypeError(
                f"OscarClient needs a ClusterProfile (see load_profile()), not "
                f"{type(profile).__name__}"
            )
        self._profile = profile
        self._timeout = timeout
        self._transport = transport
        self._retries = max(0, retries)
        self._backoff = backoff
        self._http = httpx.Client(
            base_url=profile.endpoint + "/",
            timeout=timeout,
            verify=profile.ssl_verify,
            transport=transport,
            headers={"User-Agent": f"oscar-jupyter/{__version__}"},
        )
        self._lock = threading.Lock()
        self._access_token: Secret | None = profile.token
        self._service_tokens: dict[str, Secret] = {}
        self._system_contacted = False
        self._renew = self._token_source()
        if self._renew and not profile.token:
            try:
                self._access_token = self._renew()
            except BaseException:
                self._http.close()
                raise

    # --- plumbing ------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return self._profile.endpoint

    @property
    def profile(self) -> ClusterProfile:
        return self._profile

    def __repr__(self) -> str:
        return f"OscarClient(cluster_id={self._profile.cluster_id!r}, endpoint={self.endpoint!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OscarClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _token_source(self) -> Callable[[], Secret] | None:
        """How to get a new OIDC access token, in oscar-cli's order: oidc-agent, then the
        refresh token; None when the profile has neither."""
        profile = self._profile
        if profile.oidc_account_name and not profile.token:
            return lambda: agent_access_token(profile)
        if profile.refresh_token:
            return lambda: refresh_access_token(
                profile, verify=profile.ssl_verify, transport=self._transport
            )
        return None

    def _secrets(self) -> Iterable[Secret | None]:
        yield self._profile.password
        if self._profile.user and self._profile.password:
            yield Secret(self._basic_credentials())
        yield self._profile.token
        yield self._profile.refresh_token
        yield self._access_token
        yield from list(self._service_tokens.values())

    def _scrub(self, text: str) -> str:
        for secret in self._secrets():
            if secret and len(secret.reveal()) >= 4:
                text = text.replace(secret.reveal(), "***")
        return text

    def _oidc_token(self) -> Secret | None:
        """The current OIDC access token, refreshed first when it is about to expire."""
        with self._lock:
            token = self._access_token
            if token and self._renew:
                expiry = _jwt_expiry(token)
                if expiry is not None and expiry - time.time() < _TOKEN_MARGIN_SECONDS:
                    self._access_token = token = self._renew()
            return token

    def _system_auth(self) -> str | None:
        token = self._oidc_token()
        if token:
            return f"Bearer {token.reveal()}"
        profile = self._profile
        if profile.user and profile.password:
            return f"Basic {self._basic_credentials()}"
        return None

    def _basic_credentials(self) -> str:
        password = self._profile.password
        pair = f"{self._profile.user}:{password.reveal() if password else ''}".encode()
        return base64.b64encode(pair).decode("ascii")

    def _refresh_after_401(self, rejected: str | None) -> bool:
        """Get a new OIDC token after a 401; False when there is no way to."""
        if not self._renew:
            return False
        with self._lock:
            current = self._access_token
            if current and rejected != f"Bearer {current.reveal()}":
                return True  # another thread renewed it meanwhile
            self._access_token = self._renew()
        return True

    def _send(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200,),
        auth: Callable[[], str | None] | None = None,
        on_401: Callable[[str | None], bool] | None = None,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        attempt = 0
        retried_401 = False
        while True:
            request_headers = dict(headers or {})
            try:
                authorization = auth() if auth else None
            except ConfigError as exc:  # an expiring OIDC token could not be renewed
                raise OscarError(
                    401,
                    method,
                    path,
                    "the access token expired and getting a "
                    f"new one failed: {self._scrub(str(exc))}",
                    endpoint=self.endpoint,
                ) from None
            if authorization:
                request_headers["Authorization"] = authorization
            try:
                response = self._http.request(
                    method,
                    path.lstrip("/"),
                    params=params,
                    json=json_body,
                    content=content,
                    headers=request_headers,
                )
            except httpx.TransportError as exc:
                retryable = _GET_RETRY_ERRORS if method == "GET" else _UNSENT_ERRORS
                if isinstance(exc, retryable) and attempt < self._retries:
                    attempt += 1
                    time.sleep(self._backoff * 2 ** (attempt - 1))
                    continue
                raise self._unreachable(method, path, exc) from None
            if response.status_code in ok:
                if path.startswith("/system/"):
                    self._system_contacted = True
                return response
            if (
                response.status_code in _RETRY_STATUSES
                and method == "GET"
                and attempt < self._retries
            ):
                attempt += 1
                time.sleep(self._backoff * 2 ** (attempt - 1))
                continue
            if response.status_code == 401 and on_401 and not retried_401:
                try:
                    again = on_401(authorization)
                except ConfigError as exc:
                    raise OscarError(
                        401,
                        method,
                        path,
                        "the access token was rejected and "
                        f"getting a new one failed: {self._scrub(str(exc))}",
                        endpoint=self.endpoint,
                    ) from None
                if again:
                    retried_401 = True
                    continue
            raise self._answer_error(method, path, response)

    def _unreachable(self, method: str, path: str, exc: httpx.TransportError) -> OscarError:
        detail = self._scrub(str(exc)) or type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            seconds = (
                f"{self._timeout:g} s" if isinstance(self._timeout, (int, float)) else "the timeout"
            )
            message = f"no answer within {seconds} ({type(exc).__name__})"
        else:
            message = detail
        if "CERTIFICATE_VERIFY_FAILED" in detail or "certificate verify failed" in detail:
            hint = (
                "the TLS certificate could not be verified; if you trust this cluster, set "
                "ssl_verify: false in its profile or OSCAR_SSL_VERIFY=false"
            )
        else:
            hint = "check that the endpoint is right and the cluster is up and reachable"
            if urlsplit(self.endpoint).hostname in _LOOPBACK_HOSTS:
                hint += " (for the local OSCAR: `oscar-jupyter local status`)"
        return OscarError(None, method, path, message, endpoint=self.endpoint, hint=hint)

    def _answer_error(self, method: str, path: str, response: httpx.Response) -> OscarError:
        status = response.status_code
        message = self._server_text(response)
        hint = None
        if status == 401:
            hint = self._credentials_hint()
        elif status == 403 and "provision" in message.lower():
            hint = "call any /system endpoint (e.g. client.config()) with the same token first"
        elif status == 403:
            hint = "the credentials are valid but lack access to this resource"
        elif status == 500 and not response.content.strip() and _is_job_log(method, path):
            # B7 (reference OSCAR.md section 13): OSCAR's log handler panics on a job without
            # a pod (pkg/handlers/logs.go 279-283) and gin answers 500 with no body.
            hint = NO_POD_HINT
        elif status in (502, 504):
            hint = (
                f"{status} comes from the proxy in front of OSCAR (the cluster's ingress), not "
                "from OSCAR: OSCAR did not answer it in time, or is restarting (every service "
                "created or deleted restarts its MinIO); retried already, so try again in a "
                "minute, and tell the site's admins if it lasts"
            )
        elif 300 <= status < 400 and response.headers.get("location"):
            hint = (
                f"the server redirects to {self._scrub(response.headers['location'])}; "
                "use that address as the endpoint"
            )
        return OscarError(status, method, path, message, endpoint=self.endpoint, hint=hint)

    def _server_text(self, response: httpx.Response) -> str:
        text = response.text.strip()
        try:
            body = json.loads(text) if text.startswith("{") else None
        except ValueError:
            body = None
        if isinstance(body, dict):
            for key in ("message", "error", "detail"):
                if isinstance(body.get(key), str) and body[key].strip():
                    text = body[key].strip()
                    break
        text = self._scrub(text)
        if not text:
            return response.reason_phrase or "(empty answer)"
        if len(text) > _MESSAGE_LIMIT:
            text = text[:_MESSAGE_LIMIT].rstrip() + " ..."
        return text

    def _credentials_hint(self) -> str:
        profile = self._profile
        where = f"cluster {profile.cluster_id!r}"
        kind = profile.auth_kind
        if kind == "basic":
            return (
                f"check the user {profile.user!r} and password of {where} (auth_user/"
                "auth_password in the config file, or OSCAR_USER/OSCAR_PASSWORD)"
            )
        # OSCAR answers 401 to a valid token whose user is not in the groups (VOs) the cluster
        # admits (pkg/utils/auth/oidc.go: oidc_groups), not only to a bad or expired one.
        groups = (
            "; or your identity is valid but not in a group (VO) this cluster admits: ask its "
            "admins which one (OSCAR's oidc_groups)"
        )
        if kind == "token":
            return f"the access token of {where} was rejected; set a fresh OSCAR_TOKEN{groups}"
        if kind in ("refresh-token", "oidc-agent"):
            return (
                f"the token obtained for {where} was rejected; check that the cluster trusts "
                f"its issuer{groups}"
            )
        return (
            f"{where} has no credentials; set OSCAR_USER/OSCAR_PASSWORD or OSCAR_TOKEN, or "
            "add them to the config file"
        )

    def _json(self, method: str, path: str, response: httpx.Response) -> Any:
        if not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            snippet = self._scrub(response.text.strip()[:120])
            raise OscarError(
                response.status_code,
                method,
                path,
                f"the answer is not JSON ({snippet!r})",
                endpoint=self.endpoint,
                hint="check that the endpoint points at OSCAR itself",
            ) from None

    def _system(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any
    ) -> httpx.Response:
        return self._send(
            method, path, ok=ok, auth=self._system_auth, on_401=self._refresh_after_401, **kwargs
        )

    def _system_json(self, path: str, **kwargs: Any) -> Any:
        return self._json("GET", path, self._system("GET", path, **kwargs))

    # --- cluster ---------------------------------------------------------------------------

    def health(self) -> str:
        """``GET /health`` (no auth): "Ok" when OSCAR is up."""
        return self._send("GET", "/health").text.strip()

    def info(self) -> dict[str, Any]:
        return self._system_json("/system/info") or {}

    def config(self) -> dict[str, Any]:
        """``GET /system/config``. With OIDC this also provisions the user on the cluster."""
        return self._system_json("/system/config") or {}

    def status(self) -> dict[str, Any]:
        return self._system_json("/system/status") or {}

    # --- buckets (OSCAR's MinIO) -----------------------------------------------------------

    def list_buckets(self) -> list[dict[str, Any]]:
        """``GET /system/buckets``: the caller's own buckets."""
        return self._system_json("/system/buckets") or []

    def create_bucket(self, name: str) -> None:
        """``POST /system/buckets``: a private bucket owned by the caller (400 when the name
        exists, whoever owns it)."""
        body = {"bucket_name": name, "visibility": "private"}
        self._system("POST", "/system/buckets", ok=(200, 201), json_body=body)

    # --- services --------------------------------------------------------------------------

    @staticmethod
    def _service_path(name: str) -> str:
        return "/system/services/" + quote(_check_name(name, "Service name"), safe="")

    def list_services(self) -> list[dict[str, Any]]:
        return self._system_json("/system/services") or []

    def get_service(self, name: str) -> dict[str, Any]:
        service = self._system_json(self._service_path(name))
        if not isinstance(service, dict):
            raise OscarError(
                200,
                "GET",
                self._service_path(name),
                "the answer is not a service definition",
                endpoint=self.endpoint,
            )
        return service

    def create_service(self, service: dict[str, Any]) -> None:
        name = self._definition_name(service)
        self._system("POST", "/system/services", ok=(200, 201), json_body=service)
        self._forget_service_token(name)

    def update_service(self, service: dict[str, Any]) -> None:
        name = self._definition_name(service)
        self._system("PUT", "/system/services", ok=(200, 204), json_body=service)
        self._forget_service_token(name)

    def delete_service(self, name: str) -> None:
        self._system("DELETE", self._service_path(name), ok=(200, 204))
        self._forget_service_token(name)

    @staticmethod
    def _definition_name(service: Any) -> str:
        if not isinstance(service, dict):
            raise TypeError(f"A service definition is a dict, not {type(service).__name__}")
        return _check_name(service.get("name"), "Service name ('name' of the definition)")

    def _forget_service_token(self, name: str) -> None:
        with self._lock:
            self._service_tokens.pop(name, None)

    def service_token(self, name: str) -> str:
        """The service's own token for ``/job`` (from its definition; cached)."""
        with self._lock:
            cached = self._service_tokens.get(name)
        if cached:
            return cached.reveal()
        token = self.get_service(name).get("token")
        if not isinstance(token, str) or not token:
            raise OscarError(
                200,
                "GET",
                self._service_path(name),
                "the service definition has no token",
                endpoint=self.endpoint,
                hint="this cluster may need OIDC for /job; set OSCAR_TOKEN",
            )
        with self._lock:
            self._service_tokens[name] = Secret(token)
        return token

    # --- jobs ------------------------------------------------------------------------------

    def _job_auth_for(
        self, service: str
    ) -> tuple[Callable[[], str | None], Callable[[str | None], bool]]:
        if self._access_token:
            if not self._system_contacted:
                self.config()  # OIDC users must touch /system once before /job (OSCAR.md 2)

            def oidc() -> str | None:
                token = self._oidc_token()
                return f"Bearer {token.reveal()}" if token else None

            return oidc, self._refresh_after_401

        def service_bearer() -> str | None:
            return f"Bearer {self.service_token(service)}"

        def renew_service_token(_rejected: str | None) -> bool:
            self._forget_service_token(service)  # the service may have been recreated
            return True

        return service_bearer, renew_service_token

    def submit_job(self, service: str, body: bytes, *, job_id: str | None = None) -> None:
        """``POST /job/{service}``: start one asynchronous job with ``body`` as its event."""
        path = "/job/" + quote(_check_name(service, "Service name"), safe="")
        if isinstance(body, str):
            body = body.encode("utf-8")
        if not isinstance(body, (bytes, bytearray)):
            raise TypeError(f"The job body must be bytes, not {type(body).__name__}")
        headers = {"Content-Type": "application/octet-stream"}
        if job_id is not None:
            headers["X-Delegated-Job-ID"] = _check_name(job_id, "Job id", limit=63)
        auth, on_401 = self._job_auth_for(service)
        self._send(
            "POST",
            path,
            ok=(200, 201),
            auth=auth,
            on_401=on_401,
            content=bytes(body),
            headers=headers,
        )

    def _logs_path(self, service: str, job: str | None = None) -> str:
        path = "/system/logs/" + quote(_check_name(service, "Service name"), safe="")
        if job is not None:
            path += "/" + quote(_check_name(job, "Job name"), safe="")
        return path

    def list_jobs(self, service: str) -> dict[str, dict[str, Any]]:
        """Every job of the service with its status and times, following ``next_page``."""
        path = self._logs_path(service)
        jobs: dict[str, dict[str, Any]] = {}
        page: str | None = None
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            data = self._system_json(path, params={"page": page} if page else None)
            listing, page = _split_listing(data, path)
            jobs.update(listing)
            if not page or page in seen:
                break
            seen.add(page)
        return jobs

    def job_logs(self, service: str, job: str) -> str:
        """The job's whole log so far (OSCAR cannot follow; poll and de-duplicate)."""
        return self._system("GET", self._logs_path(service, job)).text

    def delete_job(self, service: str, job: str) -> None:
        """Delete one job and its pod (on a virtual node this cancels the Slurm job)."""
        self._system("DELETE", self._logs_path(service, job), ok=(200, 204))

    def delete_jobs(self, service: str, *, all: bool = False) -> None:
        """Delete the service's finished jobs; ``all=True`` also pending, running and failed."""
        self._system(
            "DELETE",
            self._logs_path(service),
            ok=(200, 204),
            params={"all": "true"} if all else None,
        )


NO_POD_HINT = (
    "an empty 500 is how OSCAR answers for the log of a job that has no pod: not created yet, "
    "held by the queue (Kueue), or deleted"
)


def _is_job_log(method: str, path: str) -> bool:
    """A GET of one job's log: /system/logs/{service}/{job}."""
    parts = path.strip("/").split("/")
    return method == "GET" and len(parts) == 4 and parts[:2] == ["system", "logs"]


def is_no_pod_answer(err: OscarError) -> bool:
    """The empty 500 of B7: the job has no pod (yet, or any more); not a failure."""
    return err.status_code == 500 and err.hint == NO_POD_HINT


def _split_listing(data: Any, path: str) -> tuple[dict[str, dict[str, Any]], str | None]:
    """(jobs, next page token) from a ``/system/logs/{svc}`` answer, either format."""
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        raise OscarError(200, "GET", path, "the job listing is not a JSON object")
    is_paged = (
        "jobs" in data
        and set(data) <= {"jobs", "next_page", "remaining_jobs"}
        and (
            data["jobs"] is None
            or (isinstance(data["jobs"], dict) and not isinstance(data["jobs"].get("status"), str))
        )
    )
    if is_paged:
        page = data.get("next_page")
        return dict(data["jobs"] or {}), page if isinstance(page, str) and page else None
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}, None
