"""Authentication for every route of the dashboard (pages, static files, API, schema and /metrics).

An ASGI middleware rather than a route dependency, so nothing mounted later (static files, the
OpenAPI schema) can slip past it.  Credentials are compared in constant time (`hmac.compare_digest`),
and both halves of a basic credential are always compared, so the answer's timing says nothing about
which half was wrong.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

REALM = "brain-tasks dashboard"


class AuthConfigError(ValueError):
    """The dashboard was asked to start without credentials, or with malformed ones."""


@dataclass(frozen=True)
class Credentials:
    user: bytes | None = None
    password: bytes | None = None
    token: bytes | None = None

    @classmethod
    def parse(cls, basic: str | None, token: str | None) -> Credentials:
        """`basic` is `user:password` (BRAIN_DASHBOARD_AUTH), `token` a bearer token (BRAIN_DASHBOARD_TOKEN)."""
        user = password = None
        if basic:
            name, sep, secret = basic.partition(":")
            if not sep or not name or not secret:
                raise AuthConfigError("BRAIN_DASHBOARD_AUTH must be user:password with both parts non-empty")
            user, password = name.encode(), secret.encode()
        return cls(user, password, token.encode() if token else None)

    @property
    def configured(self) -> bool:
        return self.user is not None or self.token is not None

    def accepts(self, authorization: bytes | None) -> bool:
        if not authorization:
            return False
        scheme, _, value = authorization.partition(b" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == b"bearer" and self.token is not None:
            return hmac.compare_digest(value, self.token)
        if scheme == b"basic" and self.user is not None and self.password is not None:
            try:
                decoded = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return False
            user, _, password = decoded.partition(b":")
            user_ok = hmac.compare_digest(user, self.user)
            password_ok = hmac.compare_digest(password, self.password)
            return user_ok & password_ok
        return False

    def challenge(self) -> str:
        return f'Basic realm="{REALM}"' if self.user is not None else f'Bearer realm="{REALM}"'


class AuthMiddleware:
    """401 with a challenge for every HTTP request without accepted credentials."""

    def __init__(self, app: ASGIApp, credentials: Credentials | None) -> None:
        self.app = app
        self.credentials = credentials   # None: --insecure-local, bound to the loopback interface

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.credentials is None:
            await self.app(scope, receive, send)
            return
        authorization = dict(scope.get("headers") or []).get(b"authorization")
        if self.credentials.accepts(authorization):
            await self.app(scope, receive, send)
            return
        response = PlainTextResponse("authentication required\n", status_code=401,
                                     headers={"WWW-Authenticate": self.credentials.challenge()})
        await response(scope, receive, send)
