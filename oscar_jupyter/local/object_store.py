"""The local OSCAR's object storage: an S3 server on loopback standing in for OSCAR's MinIO.

Run as ``python -m oscar_jupyter.local.object_store --home H`` (the local OSCAR's server starts
it, see ``start_object_store``). It is moto's S3 and IAM (``moto[server]``, the well-kept AWS
mock on PyPI; MinIO itself cannot be installed from the registries here) with IAM enforced from
the first request: every request is signed, and a user's keys reach only what the user's IAM
policy grants (``storage_accounts.py`` writes it as OSCAR writes MinIO's: the buckets the user
owns). moto alone falls short of MinIO in three ways, which ``SignatureGate`` closes:

- it answers presigned URLs with a 500 (it looks for an ``Authorization`` header): the gate
  checks a presigned request's signature and expiry itself (SigV4 query form, as MinIO does in
  ``cmd/signature-v4.go`` ``doesPresignedSignatureMatch``), then hands it on to moto signed in
  the header form with the same key, so moto still applies that key's policy;
- it lets anonymous requests through to objects without an ACL: refused (MinIO's buckets are
  private unless a policy says otherwise);
- it serves ``/moto-api`` (a dump of every key, and a switch that turns auth off): refused.

The admin's keys go to ``<home>/object-store.json`` (0600), read by the local OSCAR alone.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

REGION = "us-east-1"
ADMIN_USER = "oscar-admin"
CONFIG_NAME = "object-store.json"
ACCOUNT_ID = "123456789012"  # moto's default account
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4's limit, which MinIO enforces too

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class ObjectStoreConfig:
    """Where the object store listens and the admin's keys (the local OSCAR's MinIO admin)."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = REGION

    @classmethod
    def read(cls, home: Path) -> ObjectStoreConfig:
        document = json.loads((home / CONFIG_NAME).read_text())
        return cls(**document)


def config_path(home: Path) -> Path:
    return home / CONFIG_NAME


# --- the gate in front of moto -------------------------------------------------------------------


def _uri_encode(text: str, *, keep_slash: bool) -> str:
    return quote(text, safe="/~" if keep_slash else "~")


def presigned_signature(
    secret_key: str,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    host: str,
    amz_date: str,
    scope: str,
    signed_headers: str,
) -> str:
    """SigV4 of a presigned request (query parameters without X-Amz-Signature)."""
    canonical_query = "&".join(
        f"{_uri_encode(k, keep_slash=False)}={_uri_encode(v, keep_slash=False)}"
        for k, v in sorted(query)
    )
    header_values = {"host": host}
    names = signed_headers.split(";")
    canonical_headers = "".join(f"{name}:{header_values.get(name, '')}\n" for name in names)
    canonical_request = "\n".join(
        (method, path, canonical_query, canonical_headers, signed_headers, "UNSIGNED-PAYLOAD")
    )
    string_to_sign = "\n".join(
        (
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        )
    )
    date, region, service, _ = scope.split("/")
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


class SignatureGate:
    """WSGI middleware in front of moto's application (see the module's docstring)."""

    def __init__(self, app: Callable[..., Any], secret_of: Callable[[str], str | None]) -> None:
        self.app = app
        self.secret_of = secret_of

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/moto-api"):
            return _s3_error(start_response, "403 Forbidden", "AccessDenied", "Access Denied")
        query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if any(name == "X-Amz-Signature" for name, _ in query):
            refusal = self._header_signed(environ, query)
            if refusal:
                return _s3_error(start_response, "403 Forbidden", *refusal)
        elif "HTTP_AUTHORIZATION" not in environ:
            return _s3_error(start_response, "403 Forbidden", "AccessDenied", "Access Denied")
        return self.app(environ, start_response)

    def _header_signed(
        self, environ: Environ, query: list[tuple[str, str]]
    ) -> tuple[str, str] | None:
        """Check a presigned request, then turn it into the header-signed one moto checks;
        (code, message) when it is refused."""
        params = dict(query)
        try:
            algorithm = params["X-Amz-Algorithm"]
            access_key, scope = params["X-Amz-Credential"].split("/", 1)
            amz_date = params["X-Amz-Date"]
            expires = int(params["X-Amz-Expires"])
            signed_headers = params["X-Amz-SignedHeaders"]
            signature = params["X-Amz-Signature"]
            signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except (KeyError, ValueError):
            return ("AuthorizationQueryParametersError", "malformed presigned request")
        if algorithm != "AWS4-HMAC-SHA256" or not 1 <= expires <= MAX_PRESIGN_SECONDS:
            return ("AuthorizationQueryParametersError", "malformed presigned request")
        secret_key = self.secret_of(access_key)
        if secret_key is None:
            return ("InvalidAccessKeyId", "The Access Key Id you provided does not exist.")
        if time.time() > signed_at.timestamp() + expires:
            return ("AccessDenied", "Request has expired")
        rest = [(k, v) for k, v in query if k != "X-Amz-Signature"]
        raw_path = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
        raw_path = raw_path.split("?", 1)[0] or _uri_encode(
            environ.get("PATH_INFO", ""), keep_slash=True
        )
        expected = presigned_signature(
            secret_key,
            environ["REQUEST_METHOD"],
            raw_path,
            rest,
            environ.get("HTTP_HOST", ""),
            amz_date,
            f"{scope}",
            signed_headers,
        )
        if not hmac.compare_digest(expected, signature):
            return (
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        self._sign_in_header(environ, access_key, secret_key, raw_path, query)
        return None

    @staticmethod
    def _sign_in_header(
        environ: Environ,
        access_key: str,
        secret_key: str,
        raw_path: str,
        query: list[tuple[str, str]],
    ) -> None:
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        kept = [(k, v) for k, v in query if not k.startswith("X-Amz-")]
        query_string = urlencode(kept)
        host = environ.get("HTTP_HOST", "")
        url = f"http://{host}{raw_path}" + (f"?{query_string}" if query_string else "")
        request = AWSRequest(
            method=environ["REQUEST_METHOD"], url=url, data=body, headers={"Host": host}
        )
        S3SigV4Auth(Credentials(access_key, secret_key), "s3", REGION).add_auth(request)
        environ["QUERY_STRING"] = query_string
        if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            # urllib's default for a body; moto would parse it as a form and store nothing,
            # MinIO stores the bytes
            environ["CONTENT_TYPE"] = "application/octet-stream"
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Content-SHA256"):
            environ["HTTP_" + name.upper().replace("-", "_")] = request.headers[name]
        for key in ("RAW_URI", "REQUEST_URI"):
            if key in environ:
                environ[key] = raw_path + (f"?{query_string}" if query_string else "")


def _s3_error(
    start_response: StartResponse, status: str, code: str, message: str
) -> Iterable[bytes]:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    ).encode()
    start_response(
        status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
    )
    return [body]


# --- the process ---------------------------------------------------------------------------------


def _moto_app() -> tuple[Callable[..., Any], Callable[[str], str | None], tuple[str, str]]:
    """moto's S3+IAM application, its admin user (full rights, like MinIO's root), and the
    lookup of a secret key by access key."""
    os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "true")
    from moto import settings
    from moto.iam.models import iam_backends
    from moto.server import DomainDispatcherApplication, create_backend_app

    iam = iam_backends[ACCOUNT_ID]["aws"]
    iam.create_user(REGION, ADMIN_USER)
    everything = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    iam.put_user_policy(ADMIN_USER, "admin", json.dumps(everything))
    key = iam.create_access_key(ADMIN_USER)
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # IAM from the first request on

    def secret_of(access_key: str) -> str | None:
        for user in iam.users.values():
            for candidate in user.access_keys:
                if candidate.access_key_id == access_key and candidate.status == "Active":
                    return str(candidate.secret_access_key)
        return None

    app = DomainDispatcherApplication(create_backend_app)
    return app, secret_of, (key.access_key_id, key.secret_access_key)


def serve(home: Path, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until killed; writes `<home>/object-store.json` once listening."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass  # a line per request would fill the local OSCAR's log

    app, secret_of, (access_key, secret_key) = _moto_app()
    server = make_server(
        host, port, SignatureGate(app, secret_of), threaded=True, request_handler=QuietHandler
    )
    endpoint = f"http://{host}:{server.server_port}"
    config = ObjectStoreConfig(endpoint, access_key, secret_key)
    target = config_path(home)
    temporary = target.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(config.__dict__, handle)
    os.replace(temporary, target)
    print(f"object store listening on {endpoint}", flush=True)
    server.serve_forever()


def start_object_store(home: Path, log_file: Path, timeout: float = 60.0) -> subprocess.Popen:
    """Start the object store as a child process; returns once it listens."""
    target = config_path(home)
    target.unlink(missing_ok=True)
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, "--home", str(home)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while not target.exists():
        if process.poll() is not None:
            raise RuntimeError(f"the object store exited with status {process.returncode}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the object store did not start within {timeout:.0f} s")
        time.sleep(0.05)
    return process


def random_secret() -> str:
    return secrets.token_urlsafe(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}")
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default=0, type=int)
    args = parser.parse_args(argv)
    serve(args.home, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
