"""The request guard every request of ``embedkit serve`` passes first (plain ASGI), and the JSON error shape.

Bearer-token check for writes (in constant time), JSON content type for request bodies, the body-size
limit, the strict JSON checks of :func:`embedkit.serve.inputs.parse_json_body` (UTF-8, nesting, finite
numbers, no lone surrogates, each refused naming the field), security headers, and request metrics.
Every error leaves as ``{"error": {"code", "message", ...}}``; an unexpected exception becomes a 500
answer inside the guard, so the keep-alive connection stays usable for the next request.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from typing import Any

from fastapi import HTTPException
from starlette.datastructures import Headers, MutableHeaders

from embedkit.serve.config import ServeConfig, is_loopback
from embedkit.serve.inputs import InputError, parse_json_body
from embedkit.serve.service import SearchService

__all__ = ["GuardMiddleware", "RequestGuard", "api_error", "error_body", "internal_error", "limit_error"]

logger = logging.getLogger(__name__)

#: (method, path prefix) of the endpoints that change the index: they need the token
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
WRITE_PREFIX = "/api/documents"
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def api_error(status: int, code: str, message: str, **extra: Any) -> HTTPException:
    """An HTTPException whose JSON body is ``{"error": {"code", "message", **extra}}``."""
    return HTTPException(status_code=status, detail={"code": code, "message": message, **extra})


def limit_error(status: int, limit: str, maximum: int, message: str) -> HTTPException:
    return api_error(status, "limit_exceeded", f"{message} (limit {limit}={maximum})", limit=limit, max=maximum)


def error_body(status: int, code: str, message: str, **extra: Any) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, **extra}}).encode()


def internal_error(method: str, path: str, exc: BaseException) -> str:
    """Log ``exc`` with a reference; the message for the client (no detail)."""
    ref = uuid.uuid4().hex[:12]
    logger.error("request %s %s failed (ref %s)", method, path, ref, exc_info=exc)
    return f"internal error; the server log has the details (ref {ref})"


# --- the ASGI guard ------------------------------------------------------------------------------

class RequestGuard:
    """Auth, content type, body limit, security headers and metrics around the FastAPI app."""

    def __init__(self, app, service: SearchService):
        self.app = app
        self.service = service
        self.config: ServeConfig = service.config

    async def _reply(self, send, status: int, code: str, message: str, headers=(), **extra) -> None:
        body = error_body(status, code, message, **extra)
        hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        hdrs += [(k.encode(), v.encode()) for k, v in headers]
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": body})

    def _auth_error(self, scope, headers: Headers):
        cfg = self.config
        if cfg.read_only:
            return 403, "read_only", "this server is read-only (started with --read-only); writes are refused", ()
        if cfg.token is None:
            host = headers.get("host", "").rsplit(":", 1)[0] if not headers.get("host", "").startswith("[") \
                else headers.get("host", "")[1:].split("]")[0]
            if not is_loopback(host):  # a DNS-rebinding page must not write to a token-less local server
                return 403, "forbidden_host", ("writes without a token are accepted only at a localhost address; "
                                               "start the server with --token-file to write from elsewhere"), ()
            return None
        auth = headers.get("authorization")
        challenge = (("www-authenticate", 'Bearer realm="embedkit"'),)
        if not auth:
            return 401, "missing_token", "this endpoint needs 'Authorization: Bearer TOKEN'", challenge
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), cfg.token.encode()):
            return 401, "invalid_token", "the bearer token is wrong", \
                (("www-authenticate", 'Bearer realm="embedkit", error="invalid_token"'),)
        return None

    async def _call_app(self, scope, receive, send, state) -> None:
        """Run the app; an exception it lets through becomes a 500 here (not in the server), so the
        connection is not dropped and the client's next keep-alive request works."""
        try:
            await self.app(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - answered (or logged) here on purpose
            message = internal_error(scope["method"], scope["path"], exc)
            if not state["started"]:
                await self._reply(send, 500, "internal_error", message)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        method, path = scope["method"], scope["path"]
        state = {"status": 500, "started": False}
        is_page = path in ("/", "/docs") or path.startswith("/doc/")  # HTML pages: strict CSP, no framing

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
                h = MutableHeaders(scope=message)
                h.setdefault("x-content-type-options", "nosniff")
                h.setdefault("referrer-policy", "no-referrer")
                if is_page or path.startswith("/static/"):
                    h.setdefault("content-security-policy", PAGE_CSP)
                    h.setdefault("x-frame-options", "DENY")
            await send(message)

        try:
            headers = Headers(scope=scope)
            if method in WRITE_METHODS and path.startswith(WRITE_PREFIX):
                err = self._auth_error(scope, headers)
                if err is not None:
                    status, code, message, extra_headers = err
                    await self._reply(send_wrapped, status, code, message, extra_headers)
                    return
            if method in ("POST", "PUT", "PATCH"):
                ctype = headers.get("content-type", "").split(";")[0].strip().lower()
                if ctype != "application/json":
                    await self._reply(send_wrapped, 415, "unsupported_media_type",
                                      "send the request body as JSON with 'Content-Type: application/json'")
                    return
            if method in WRITE_METHODS:
                limit = self.config.max_body_bytes
                declared = headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    await self._reply(send_wrapped, 413, "limit_exceeded",
                                      f"request body of {int(declared)} bytes is too large (limit max_body_bytes={limit})",
                                      limit="max_body_bytes", max=limit)
                    return
                chunks, size, more = [], 0, True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        await self._reply(send_wrapped, 413, "limit_exceeded",
                                          f"request body is larger than {limit} bytes (limit max_body_bytes={limit})",
                                          limit="max_body_bytes", max=limit)
                        return
                    chunks.append(chunk)
                    more = message.get("more_body", False)
                body = b"".join(chunks)
                if method != "DELETE" and body:
                    try:  # a large body is checked off the event loop (up to ~0.1 s per MiB)
                        if len(body) > 64 * 1024:
                            await asyncio.to_thread(parse_json_body, body)
                        else:
                            parse_json_body(body)
                    except InputError as e:
                        extra = {"fields": [e.field]} if e.field else {}
                        await self._reply(send_wrapped, e.status, e.code, e.message, **extra)
                        return
                sent = False

                async def replay():
                    nonlocal sent
                    if not sent:
                        sent = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                await self._call_app(scope, replay, send_wrapped, state)
            else:
                await self._call_app(scope, receive, send_wrapped, state)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None)
            if label is None:  # refused by the guard before routing, or no such route
                label = ("/static/{name}" if path.startswith("/static/") else
                         "/api/documents (refused)" if path.startswith(WRITE_PREFIX) else "unmatched")
            self.service.metrics.observe_request(method, label, state["status"], time.perf_counter() - t0)


# --- request and response bodies -----------------------------------------------------------------


class GuardMiddleware(RequestGuard):
    """:class:`RequestGuard` in the shape ``app.add_middleware`` expects."""

    def __init__(self, app, service: SearchService):
        super().__init__(app, service)
