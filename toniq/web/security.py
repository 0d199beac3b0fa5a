"""The dashboard's guards: HTTP authentication, the anti-forgery token and safe headers.

Write actions are POSTs that must carry an anti-forgery token twice: in a hidden form
field and in a cookie (``SameSite=Strict``, ``HttpOnly``). The token is a random nonce
signed with a secret (HMAC-SHA256), so another site can neither read it nor plant a cookie
of its own making. A POST whose ``Origin`` (or ``Sec-Fetch-Site``) says it came from
another site is refused as well.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSRF_COOKIE = "toniq_csrf"
CSRF_FIELD = "csrf_token"

#: Sent with every response: no inline script or style may run, nothing from elsewhere is
#: loaded, and the pages cannot be framed. A defence in depth behind Jinja's escaping.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class Csrf:
    """Makes and checks anti-forgery tokens: ``nonce.hmac(secret, nonce)``."""

    def __init__(self, secret: bytes | str | None = None) -> None:
        if secret is None:
            # One per process: tokens stop working when it restarts (a reload fixes that).
            # Several processes serving one dashboard must share a secret (create_app).
            secret = secrets.token_bytes(32)
        self._key = secret.encode() if isinstance(secret, str) else bytes(secret)

    def _sign(self, nonce: str) -> str:
        digest = hmac.new(self._key, nonce.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def new_token(self) -> str:
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._sign(nonce)}"

    def valid(self, token: str | None) -> bool:
        if not token or "." not in token:
            return False
        nonce, _, signature = token.partition(".")
        return hmac.compare_digest(signature.encode(), self._sign(nonce).encode())

    def token_for(self, request: Request) -> str:
        """The browser's current token (from its cookie), or a new one to set."""
        cookie = request.cookies.get(CSRF_COOKIE)
        return cookie if cookie is not None and self.valid(cookie) else self.new_token()

    def check(self, request: Request, submitted: str | None) -> str | None:
        """Why this POST must be refused, or ``None`` if it may proceed."""
        if not same_origin(request):
            return "the request came from another site"
        cookie = request.cookies.get(CSRF_COOKIE)
        if not submitted or not cookie:
            return "the anti-forgery token is missing"
        if not hmac.compare_digest(submitted.encode(), cookie.encode()) or not self.valid(
            submitted
        ):
            return "the anti-forgery token is wrong"
        return None


def same_origin(request: Request) -> bool:
    """False when the browser tells us the request came from another site."""
    if request.headers.get("sec-fetch-site", "") == "cross-site":
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not sent by every browser for every POST; the token still decides
    host = request.headers.get("host", "")
    return origin != "null" and urlsplit(origin).netloc.lower() == host.lower()


class Credentials:
    """Who may see the dashboard: a user name and password (HTTP basic authentication),
    a token (``Authorization: Bearer TOKEN``, or basic authentication with the token as
    password and any user name), or both."""

    def __init__(
        self, username: str | None = None, password: str | None = None, token: str | None = None
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both a user name and a password, or neither")
        if password == "" or token == "":
            raise ValueError("an empty password or token would let anyone in")
        self.username = username
        self.password = password
        self.token = token

    @property
    def required(self) -> bool:
        return self.password is not None or self.token is not None

    def allows(self, authorization: str | None) -> bool:
        if not self.required:
            return True
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            return self.token is not None and _equal(value, self.token)
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep:
            return False
        ok = False
        if self.username is not None and self.password is not None:
            # Both compared, always: how long it takes says nothing about which was wrong.
            ok = _equal(user, self.username) & _equal(password, self.password)
        if self.token is not None:
            ok |= _equal(password, self.token)
        return ok


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class Guard:
    """ASGI middleware: asks for credentials (if any are set) and adds the safe headers."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        authorization = headers.get(b"authorization", b"").decode("latin-1") or None
        if not self.credentials.allows(authorization):
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"www-authenticate", b'Basic realm="toniq", charset="UTF-8"'),
                        (b"content-type", b"text/plain; charset=utf-8"),
                        *SECURITY_HEADERS,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b"toniq: log in to see this\n"})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)
