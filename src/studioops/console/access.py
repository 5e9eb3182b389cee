"""The console's gate, in front of the whole app: deny by default.

Open without a login: the probes and Prometheus (/livez, /readyz, /health, /metrics, /metrics.json), the login
page, the static assets, and the Langfuse ingestion API under /api/public (which keeps its own Basic auth).
/api/traces takes either a console session or the Langfuse key pair (Basic), which the route checks itself.
Everything else needs a valid session cookie; every POST, PUT, PATCH or DELETE also needs the session's CSRF
token (header X-CSRF-Token, or form field `csrf`). Pages answer a missing login with a redirect to /login, the
JSON API and htmx requests with 401.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, quote

from studioops.config import Settings
from studioops.console import auth

OPEN_PATHS = frozenset({"/livez", "/readyz", "/health", "/metrics", "/metrics.json", "/login", "/favicon.ico"})
OPEN_PREFIXES = ("/static/", "/api/public/")
KEY_PREFIXES = ("/api/traces",)  # scripts read traces with the Langfuse key pair, as Langfuse's public API does
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FORM = 64 * 1024  # a CSRF-checked form is small; uploads go straight to S3


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def carries_keys(path: str, headers: dict[bytes, bytes]) -> bool:
    """A read of /api/traces with Basic credentials: the route checks the key pair, the gate lets it pass."""
    return path.startswith(KEY_PREFIXES) and headers.get(b"authorization", b"")[:6].lower() == b"basic "


def _cookies(headers: dict[bytes, bytes]) -> dict[str, str]:
    from http.cookies import SimpleCookie

    jar = SimpleCookie()
    try:
        jar.load(headers.get(b"cookie", b"").decode("latin-1"))
    except Exception:  # a malformed Cookie header is no login
        return {}
    return {k: m.value for k, m in jar.items()}


def server_port(scope) -> int | None:
    server = scope.get("server")
    return server[1] if server else None


class ConsoleGate:
    """ASGI middleware: sets scope["state"]["console_session"] for the routes, refuses everything else."""

    def __init__(self, app, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or is_open(scope["path"]):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        cookie = _cookies(headers).get(auth.cookie_name(server_port(scope)))
        sid = auth.check_session(self.settings, cookie)
        if sid is None and scope["method"] in SAFE_METHODS and carries_keys(scope["path"], headers):
            return await self.app(scope, receive, send)
        if sid is None:
            return await self._refuse_login(scope, headers, send)
        if scope["method"] not in SAFE_METHODS:
            token = headers.get(b"x-csrf-token", b"").decode("latin-1") or None
            if token is None:
                body, receive = await self._buffer_form(headers, receive)
                token = (parse_qs(body.decode("utf-8", "replace")).get("csrf") or [None])[0] if body else None
            if not auth.check_csrf(self.settings, sid, token):
                return await _send(send, 403, {"detail": "missing or wrong CSRF token. Reload the page and retry"})
        scope.setdefault("state", {})["console_session"] = sid
        return await self.app(scope, receive, send)

    async def _refuse_login(self, scope, headers, send):
        path = scope["path"]
        wants_page = (scope["method"] == "GET" and not path.startswith("/api/") and b"hx-request" not in headers
                      and b"text/html" in headers.get(b"accept", b""))
        if wants_page:
            target = path + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else "")
            location = "/login?next=" + quote(target, safe="")
            return await _send(send, 303, None, [(b"location", location.encode())])
        extra = [(b"hx-redirect", b"/login")] if b"hx-request" in headers else []
        return await _send(send, 401, {"detail": "log in to the console first: `studioops console` prints a "
                                                 "login link"}, extra)

    async def _buffer_form(self, headers, receive):
        """Read a small url-encoded form body to find its `csrf` field, then replay it to the app."""
        kind = headers.get(b"content-type", b"").split(b";")[0].strip()
        length = headers.get(b"content-length", b"0")
        if kind != b"application/x-www-form-urlencoded" or not length.isdigit() or int(length) > MAX_FORM:
            return b"", receive
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_FORM:
                return b"", receive
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return body, replay


async def _send(send, status: int, body: dict | None, headers: list | None = None) -> None:
    payload = json.dumps(body).encode() if body is not None else b""
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"), *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})
