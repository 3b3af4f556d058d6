"""Security headers on every response (pure ASGI, so streaming responses stay streaming), errors included.

This middleware sits outside the app's exception handlers, so it also wraps what they could not
handle: an exception that escapes the app becomes a JSON 500 carrying the same headers (and is
raised on, for the server's log), instead of Starlette's bare plain-text one.
"""
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# No inline script anywhere: pages load their code from /static. uPlot styles elements through
# the CSSOM, which style-src does not restrict.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
# API answers are one user's data and some carry secrets (a new token), and a response that sets
# a cookie carries a session: no cache, shared or private, may keep them. Routes that say otherwise
# (the event stream's no-cache) keep theirs.
NO_STORE = (b"cache-control", b"no-store")
INTERNAL_ERROR = json.dumps({"detail": "Internal server error: the request failed on the server; "
                                       "it has been logged."}).encode()


def _with_headers(path: str, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    names = {k.lower() for k, _ in headers}
    added = [h for h in HEADERS if h[0] not in names]
    if b"cache-control" not in names and (path.startswith("/api/") or b"set-cookie" in names):
        added.append(NO_STORE)
    return headers + added


class SecurityHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        path = scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = _with_headers(path, list(message.get("headers", [])))
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if not started:  # else the client already has a status line; the server drops the connection
                await send_with_headers({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(INTERNAL_ERROR)).encode())]})
                await send_with_headers({"type": "http.response.body", "body": INTERNAL_ERROR})
            raise
