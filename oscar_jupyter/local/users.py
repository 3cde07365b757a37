"""OIDC-style users of the local OSCAR: a tiny Keycloak realm on the same server.

Each user gets an oscar-cli profile holding only `endpoint` and `oidc_refresh_token`, like a real
EGI/Keycloak profile; the client exchanges the refresh token at
`<iss>/protocol/openid-connect/token` (Keycloak's refresh flow, what oscar-cli does) for an access
token, and sends that as `Authorization: Bearer`. Tokens are JWTs signed with HS256 with a secret
kept in `<home>/oidc-secret` (0600). OSCAR (`pkg/handlers/job.go`) treats a 64-character bearer
token as a service token, so our JWTs are always much longer than that.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from .state import HomeLayout, write_atomically

REALM = "local"
CLIENT_ID = "oscar-jupyter-local"
SCOPE = "openid profile email offline_access"
SUB_DOMAIN = "local"
ACCESS_LIFETIME_S = 900
REFRESH_LIFETIME_S = 365 * 24 * 3600
TOKEN_PATH = f"/realms/{REALM}/protocol/openid-connect/token"
ADMIN_UID = "cluster_admin"  # OSCAR's types.DefaultOwner
_USER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


class TokenError(ValueError):
    """The token is not one this local OSCAR issued, or it expired (never shows the token)."""


class TokenExpired(TokenError):
    """A token of this installation whose `exp` has passed (Keycloak: "Token is not active")."""


@dataclass(frozen=True)
class Caller:
    """Who makes a request: the Basic admin, or an OIDC user (`uid` = the token's `sub`)."""

    uid: str
    username: str
    is_admin: bool

    @classmethod
    def admin(cls) -> Caller:
        return cls(uid=ADMIN_UID, username="oscar", is_admin=True)


def check_user_name(name: str) -> str:
    if not _USER_NAME.match(name):
        raise ValueError(
            f"user name {name!r} is not valid: use 1 to 31 lowercase letters, digits and '-', "
            "starting with a letter"
        )
    return name


def subject(user: str) -> str:
    """The `sub` claim of a local user, shaped like an EGI subject (`<id>@<domain>`)."""
    return f"{user}@{SUB_DOMAIN}"


def issuer(endpoint: str) -> str:
    return f"{endpoint.rstrip('/')}/realms/{REALM}"


def profile_name(user: str) -> str:
    return f"local-{user}"


def ensure_secret(layout: HomeLayout) -> bytes:
    """The installation's signing secret: read it, or create it (file mode 0600)."""
    path = layout.root / "oidc-secret"
    if path.exists():
        text = path.read_text().strip()
        if text:
            return text.encode()
    text = secrets.token_urlsafe(32)
    write_atomically(path, text + "\n", mode=0o600)
    return text.encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(claims: dict[str, Any], secret: bytes) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{_b64(signature)}"
    assert len(token) != 64, "a 64-character bearer token would be taken for a service token"
    return token


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload without checking the signature (OSCAR reads `iss` this way first)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("not a JWT")
    try:
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise TokenError("the JWT payload cannot be decoded") from None
    if not isinstance(claims, dict):
        raise TokenError("the JWT payload is not an object")
    return claims


def decode(token: str, secret: bytes, *, expected_issuer: str, token_type: str) -> dict[str, Any]:
    """The verified claims of a token this installation issued, of type `token_type`."""
    claims = unverified_claims(token)
    header, payload, signature = token.split(".")
    wanted = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    try:
        given = _unb64(signature)
    except ValueError:
        raise TokenError("bad signature") from None
    if not hmac.compare_digest(wanted, given):
        raise TokenError("bad signature")
    if claims.get("iss") != expected_issuer:
        raise TokenError("unknown issuer")
    if claims.get("typ") != token_type:
        raise TokenError(f"not a {token_type} token")
    if not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
        raise TokenExpired("expired")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise TokenError("no subject")
    return claims


def _claims(user: str, iss: str, token_type: str, lifetime: int) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": iss,
        "sub": subject(user),
        "preferred_username": user,
        "azp": CLIENT_ID,
        "scope": SCOPE,
        "typ": token_type,
        "iat": now,
        "exp": now + lifetime,
        "jti": secrets.token_hex(8),
    }


def refresh_token(user: str, *, iss: str, secret: bytes, lifetime: int = REFRESH_LIFETIME_S) -> str:
    """A long-lived Keycloak-style refresh token (claims iss, azp, scope, sub)."""
    return encode(_claims(check_user_name(user), iss, "Refresh", lifetime), secret)


def access_token(user: str, *, iss: str, secret: bytes, lifetime: int = ACCESS_LIFETIME_S) -> str:
    """An access token: claims sub (`<user>@local`), iss, exp, preferred_username."""
    return encode(_claims(check_user_name(user), iss, "Bearer", lifetime), secret)


def exchange_refresh_token(
    form: dict[str, str], *, iss: str, secret: bytes, lifetime: int = ACCESS_LIFETIME_S
) -> dict[str, Any]:
    """Keycloak's `grant_type=refresh_token` answer, or TokenError (Keycloak then says 400
    `invalid_grant`); the access token lives `lifetime` seconds."""
    if form.get("grant_type") != "refresh_token":
        raise TokenError("unsupported grant_type")
    claims = decode(
        form.get("refresh_token", ""), secret, expected_issuer=iss, token_type="Refresh"
    )
    if form.get("client_id", CLIENT_ID) != claims.get("azp"):
        raise TokenError("client_id does not match the token")
    user = claims["preferred_username"]
    return {
        "access_token": access_token(user, iss=iss, secret=secret, lifetime=lifetime),
        "expires_in": lifetime,
        "refresh_expires_in": max(0, claims["exp"] - int(time.time())),
        "refresh_token": form["refresh_token"],
        "token_type": "Bearer",
        "scope": claims.get("scope", SCOPE),
    }


def caller_from_access_token(token: str, *, iss: str, secret: bytes) -> Caller:
    claims = decode(token, secret, expected_issuer=iss, token_type="Bearer")
    return Caller(
        uid=claims["sub"], username=str(claims.get("preferred_username") or ""), is_admin=False
    )


def format_uid(uid: str) -> str:
    """OSCAR's `auth.FormatUID` (`pkg/utils/auth/multitenancy.go`): an EGI-like `id@domain`
    becomes `id`; used for the `oscar.grycap/job-owner` label (at most 62 characters)."""
    match = re.search(r"[0-9a-z]+@", uid)
    return (uid[: match.end() - 1] if match else uid)[:62]
