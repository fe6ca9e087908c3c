"""The FastAPI application: JSON API, search page, metrics, and the request guard.

Every request passes :class:`RequestGuard` first (plain ASGI): bearer-token check for writes (in
constant time), JSON content type for request bodies, the body-size limit, the strict JSON checks of
:func:`embedkit.serve.inputs.parse_json_body` (UTF-8, nesting, finite numbers, no lone surrogates,
each refused naming the field), security headers, and request metrics. Every error leaves as
``{"error": {"code", "message", ...}}`` — a limit also names itself (``"limit": "max_k"``,
``"max": 100``); tracebacks go to the server log only. An unexpected exception becomes a 500 answer
inside the guard, so the keep-alive connection stays usable for the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import time
import uuid
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from embedkit import __version__
from embedkit.data.texts import is_blank
from embedkit.errors import EmbedkitError
from embedkit.serve.batching import BatcherStopped, Overloaded
from embedkit.serve.config import ServeConfig, is_loopback
from embedkit.serve.inputs import InputError, field_name, parse_json_body
from embedkit.serve.page import STATIC_FILES, render_page, static_file
from embedkit.serve.service import SearchService, WriteUnavailable

__all__ = ["create_app", "RequestGuard", "api_error"]

logger = logging.getLogger(__name__)

#: (method, path prefix) of the endpoints that change the index: they need the token
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
WRITE_PREFIX = "/api/documents"
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def api_error(status: int, code: str, message: str, **extra: Any) -> HTTPException:
    """An HTTPException whose JSON body is ``{"error": {"code", "message", **extra}}``."""
    return HTTPException(status_code=status, detail={"code": code, "message": message, **extra})


def _limit_error(status: int, limit: str, maximum: int, message: str) -> HTTPException:
    return api_error(status, "limit_exceeded", f"{message} (limit {limit}={maximum})", limit=limit, max=maximum)


def _error_body(status: int, code: str, message: str, **extra: Any) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, **extra}}).encode()


def _internal_error(method: str, path: str, exc: BaseException) -> str:
    """Log ``exc`` with a reference; the message for the client (no detail)."""
    ref = uuid.uuid4().hex[:12]
    logger.error("request %s %s failed (ref %s)", method, path, ref, exc_info=exc)
    return f"internal error; the server log has the details (ref {ref})"


def _finite(value):
    """``value`` with every NaN/infinite float replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class _JSONResponse(JSONResponse):
    """JSON that cannot fail on what an index already holds (metadata written by other tools, e.g. a
    pandas NaN): non-finite floats are sent as ``null`` and lone surrogates as ``\\udXXX`` escapes."""

    def render(self, content) -> bytes:
        try:
            return super().render(content)
        except ValueError:  # NaN/inf (allow_nan=False) or a lone surrogate (UnicodeEncodeError)
            return json.dumps(_finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


class _DocumentId(Convertor):
    """``{doc_id:docid}``: the rest of the path, any characters (``:path`` stops at a newline)."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("embedkit_docid", _DocumentId())


# --- the ASGI guard ------------------------------------------------------------------------------

class RequestGuard:
    """Auth, content type, body limit, security headers and metrics around the FastAPI app."""

    def __init__(self, app, service: SearchService):
        self.app = app
        self.service = service
        self.config: ServeConfig = service.config

    async def _reply(self, send, status: int, code: str, message: str, headers=(), **extra) -> None:
        body = _error_body(status, code, message, **extra)
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
            message = _internal_error(scope["method"], scope["path"], exc)
            if not state["started"]:
                await self._reply(send, 500, "internal_error", message)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        method, path = scope["method"], scope["path"]
        state = {"status": 500, "started": False}
        is_page = path == "/"

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

class SearchRequest(BaseModel):
    """Several queries searched together."""

    model_config = ConfigDict(extra="forbid")
    queries: list[StrictStr] = Field(description="query texts")
    k: StrictInt | None = Field(default=None, description="results per query (default 10)")
    rescore: StrictBool | None = Field(default=None, description="float16 rescoring on/off (default: the index's)")


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: StrictStr
    text: StrictStr
    metadata: dict[str, Any] | None = None


class AddRequest(BaseModel):
    """A batch of documents to add (all or nothing)."""

    model_config = ConfigDict(extra="forbid")
    documents: list[DocumentIn]


def _loc_name(loc) -> str:
    """A pydantic error location as the field names the other errors use: ``documents[0].id``, ``k``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    name = ""
    for p in parts:
        name = field_name(name, p)
    return name or "body"


def _hit_json(hit) -> dict[str, Any]:
    return {"id": hit.id, "score": hit.score, "text": hit.text, "metadata": hit.metadata}


# --- the app -------------------------------------------------------------------------------------

def create_app(service: SearchService, *, close_service: bool = True) -> FastAPI:
    """The FastAPI app over ``service``; with ``close_service`` its shutdown closes the service
    (last snapshot, log released).

    Example:
        .. code-block:: python

            from fastapi.testclient import TestClient
            from embedkit.serve import SearchService, ServeConfig, create_app

            service = SearchService("my_index", ServeConfig(token="a-long-random-token-123"))
            with TestClient(create_app(service)) as client:
                client.get("/api/search", params={"q": "sorting a list"}).json()["hits"]
    """
    cfg = service.config

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        if close_service:
            await asyncio.to_thread(service.close)

    app = FastAPI(title="embedkit search", version=__version__, lifespan=lifespan, default_response_class=_JSONResponse,
                  description="Search an embedkit index; add and remove documents (bearer token).")
    bearer = HTTPBearer(auto_error=False, description="the server's token (--token-file or EMBEDKIT_TOKEN)")

    # -- errors ---------------------------------------------------------------------------------
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if isinstance(exc.detail, dict):
            body = {"error": exc.detail}
        elif exc.status_code == 404:
            body = {"error": {"code": "not_found",
                              "message": f"no such endpoint: {request.method} {request.url.path} (see /docs)"}}
        elif exc.status_code == 405:
            body = {"error": {"code": "method_not_allowed",
                              "message": f"{request.method} is not allowed on {request.url.path} (see /docs)"}}
        else:
            body = {"error": {"code": "http_error", "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        for e in errors:
            if e.get("type") == "json_invalid":
                pos = e.get("loc", ("body", "?"))[-1]
                reason = (e.get("ctx") or {}).get("error", "invalid JSON")
                return JSONResponse({"error": {"code": "malformed_json",
                                               "message": f"the request body is not valid JSON ({reason} at position {pos})"}},
                                    status_code=400)
        parts = [f"{_loc_name(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:5]]
        return JSONResponse({"error": {"code": "invalid_request", "message": "; ".join(parts) + " (see /docs)",
                                       "fields": [_loc_name(e.get("loc", ())) for e in errors[:20]]}},
                            status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # the guard answers first; this is the last resort
        return JSONResponse({"error": {"code": "internal_error",
                                       "message": _internal_error(request.method, request.url.path, exc)}},
                            status_code=500, headers={"connection": "close"})

    # -- helpers --------------------------------------------------------------------------------
    def check_query(q: str, where: str = "q") -> None:
        if len(q) > cfg.max_query_chars:
            raise _limit_error(422, "max_query_chars", cfg.max_query_chars,
                               f"{where} has {len(q)} characters; shorten it")
        if is_blank(q):
            raise api_error(422, "empty_query", f"{where} is empty; give some text to search for")

    def check_k(k: int | None) -> int:
        if k is None:
            return cfg.default_k
        if k < 1:
            raise api_error(422, "invalid_k", f"k={k}; ask for at least 1 result")
        if k > cfg.max_k:
            raise _limit_error(422, "max_k", cfg.max_k, f"k={k} asks for too many results")
        return k

    async def run_search(queries: list[str], k: int, rescore: bool | None):
        t0 = time.perf_counter()
        try:
            futures = service.submit_search(queries, k, rescore)
        except Overloaded as e:
            raise HTTPException(503, detail={"code": "overloaded", "message": f"the server is busy ({e}); retry shortly",
                                             "limit": "max_pending", "max": cfg.max_pending},
                                headers={"Retry-After": "1"}) from None
        except BatcherStopped:
            raise api_error(503, "shutting_down", "the server is shutting down") from None
        try:
            results = await asyncio.wait_for(asyncio.gather(*(asyncio.wrap_future(f) for f in futures)),
                                             timeout=cfg.search_timeout_s)
        except asyncio.TimeoutError:
            for f in futures:
                f.cancel()
            raise api_error(503, "search_timeout", f"the search took longer than {cfg.search_timeout_s:g} s") from None
        except BatcherStopped:
            raise api_error(503, "shutting_down", "the server is shutting down") from None
        took = time.perf_counter() - t0
        service.metrics.observe_search(len(queries), took)
        return results, took * 1000

    # -- search ---------------------------------------------------------------------------------
    @app.get("/api/search", tags=["search"], summary="Search with one query")
    async def search_get(q: str = Query(..., description="the query text"),
                         k: int | None = Query(None, description="number of results (default 10)"),
                         rescore: bool | None = Query(None, description="float16 rescoring on/off")):
        check_query(q)
        k = check_k(k)
        (hits,), took_ms = await run_search([q], k, rescore)
        return {"query": q, "k": k, "hits": [_hit_json(h) for h in hits], "took_ms": took_ms}

    @app.post("/api/search", tags=["search"], summary="Search with several queries")
    async def search_post(req: SearchRequest):
        if not req.queries:
            raise api_error(422, "no_queries", "queries is empty; give at least one query")
        if len(req.queries) > cfg.max_queries:
            raise _limit_error(413, "max_queries", cfg.max_queries, f"{len(req.queries)} queries in one request")
        for i, q in enumerate(req.queries):
            check_query(q, f"queries[{i}]")
        k = check_k(req.k)
        results, took_ms = await run_search(list(req.queries), k, req.rescore)
        return {"k": k, "results": [{"query": q, "hits": [_hit_json(h) for h in hits]}
                                    for q, hits in zip(req.queries, results)], "took_ms": took_ms}

    # -- documents ------------------------------------------------------------------------------
    @app.post("/api/documents", tags=["documents"], status_code=201, dependencies=[Depends(bearer)],
              summary="Add documents (all or nothing; acknowledged once on disk)")
    def add_documents(req: AddRequest):
        docs = req.documents
        if not docs:
            raise api_error(422, "no_documents", "documents is empty; give at least one document")
        if len(docs) > cfg.max_documents:
            raise _limit_error(413, "max_documents", cfg.max_documents, f"{len(docs)} documents in one request")
        for i, d in enumerate(docs):
            if len(d.id) > cfg.max_id_chars:
                raise _limit_error(422, "max_id_chars", cfg.max_id_chars, f"documents[{i}].id has {len(d.id)} characters")
            if not d.id.strip():
                raise api_error(422, "invalid_document", f"documents[{i}].id is empty; give every document an id")
            if len(d.text) > cfg.max_text_chars:
                raise _limit_error(413, "max_text_chars", cfg.max_text_chars,
                                   f"documents[{i}].text has {len(d.text)} characters")
            if is_blank(d.text):
                raise api_error(422, "invalid_document", f"documents[{i}].text (id {d.id!r}) is empty")
            if d.metadata is not None:
                size = len(json.dumps(d.metadata, ensure_ascii=False).encode())
                if size > cfg.max_metadata_bytes:
                    raise _limit_error(413, "max_metadata_bytes", cfg.max_metadata_bytes,
                                       f"documents[{i}].metadata is {size} bytes as JSON")
        try:
            clash = service.add_documents([d.id for d in docs], [d.text for d in docs], [d.metadata for d in docs])
        except WriteUnavailable as e:
            raise api_error(503, "writes_unavailable", str(e)) from None
        except EmbedkitError as e:
            raise api_error(422, "invalid_document", str(e)) from None
        if clash:
            raise api_error(409, "conflict", f"document ids already in the index: {', '.join(map(repr, clash[:5]))}; "
                                             "delete them first to replace them", ids=clash[:100])
        return {"added": len(docs), "ids": [d.id for d in docs]}

    @app.delete("/api/documents/{doc_id:embedkit_docid}", tags=["documents"], dependencies=[Depends(bearer)],
                summary="Remove a document (acknowledged once on disk)")
    def remove_document(doc_id: str):
        try:
            removed = service.remove_document(doc_id)
        except WriteUnavailable as e:
            raise api_error(503, "writes_unavailable", str(e)) from None
        if not removed:
            raise api_error(404, "unknown_id", f"no document with id {doc_id!r}", id=doc_id)
        return {"removed": doc_id}

    @app.get("/api/documents/{doc_id:embedkit_docid}", tags=["documents"], summary="One document by id")
    def get_document(doc_id: str):
        doc = service.get_document(doc_id)
        if doc is None:
            raise api_error(404, "unknown_id", f"no document with id {doc_id!r}", id=doc_id)
        return {"id": doc.id, "text": doc.text, "metadata": doc.metadata}

    # -- service --------------------------------------------------------------------------------
    @app.get("/api/health", tags=["service"], summary="Liveness and readiness")
    def health():
        return {"status": "ok", "documents": len(service.index),
                "writes": not cfg.read_only and service.stats()["writes_enabled"]}

    @app.get("/api/stats", tags=["service"], summary="Index, traffic and latency figures")
    def stats():
        return {**service.stats(), "limits": cfg.limits(), "read_only": cfg.read_only,
                "auth": "token" if cfg.token else ("none (loopback only)" if not cfg.read_only else "read-only")}

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics():
        s = service.stats()
        gauges = {
            "embedkit_documents": ("Documents in the index.", s["documents"]),
            "embedkit_pending_queries": ("Queries waiting for the encoder.", s["pending_queries"]),
            "embedkit_write_log_records": ("Writes in the log since the last snapshot.", s["write_log"]["records"]),
            "embedkit_write_log_bytes": ("Size of the write log.", s["write_log"]["bytes"]),
            "embedkit_uptime_seconds": ("Seconds since the server started.", s["uptime_seconds"]),
        }
        return PlainTextResponse(service.metrics.prometheus(gauges), media_type="text/plain; version=0.0.4")

    # -- the page ---------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(q: str | None = None, k: str | None = None):
        kk = cfg.default_k
        query = q or ""
        try:
            if k not in (None, ""):
                try:
                    kk = int(k)
                except ValueError:
                    raise api_error(422, "invalid_k", f"k={k!r} is not a whole number") from None
                kk = check_k(kk)
            if not query.strip():
                return HTMLResponse(render_page(query=query, k=kk, documents=len(service.index),
                                                max_query_chars=cfg.max_query_chars))
            check_query(query)
            (hits,), took_ms = await run_search([query], kk, None)
        except HTTPException as e:
            msg = e.detail.get("message", "error") if isinstance(e.detail, dict) else str(e.detail)
            return HTMLResponse(render_page(query=query[: cfg.max_query_chars], k=kk, error=msg,
                                            max_query_chars=cfg.max_query_chars), status_code=e.status_code)
        return HTMLResponse(render_page(query=query, k=kk, hits=hits, took_ms=took_ms,
                                        max_query_chars=cfg.max_query_chars))

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        data = static_file(name)
        if data is None:
            raise api_error(404, "not_found", f"no static file {name!r}")
        return Response(data, media_type=STATIC_FILES[name], headers={"cache-control": "public, max-age=300"})

    app.add_middleware(_GuardMiddleware, service=service)
    return app


class _GuardMiddleware(RequestGuard):
    """:class:`RequestGuard` in the shape ``app.add_middleware`` expects."""

    def __init__(self, app, service: SearchService):
        super().__init__(app, service)
