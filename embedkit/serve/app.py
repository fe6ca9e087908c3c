"""The FastAPI application: JSON API, search page, metrics.

Every request passes :class:`~embedkit.serve.guard.RequestGuard` first (plain ASGI,
:mod:`embedkit.serve.guard`): token, content type, body size and strict JSON checks, security headers,
request metrics. Every error leaves as
``{"error": {"code", "message", ...}}`` — a limit also names itself (``"limit": "max_k"``,
``"max": 100``); tracebacks go to the server log only. An unexpected exception becomes a 500 answer
inside the guard, so the keep-alive connection stays usable for the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException

from embedkit import __version__
from embedkit.data.texts import is_blank
from embedkit.errors import EmbedkitError
from embedkit.serve.batching import BatcherStopped, Overloaded
from embedkit.serve.guard import (
    GuardMiddleware,
    RequestGuard,
    api_error,
    internal_error,
    limit_error,
)
from embedkit.serve.inputs import field_name
from embedkit.serve.page import (
    STATIC_FILES,
    ScoreBaseline,
    random_directions,
    render_api_docs,
    render_document,
    render_page,
    static_file,
)
from embedkit.serve.service import SearchService, WriteUnavailable

__all__ = ["create_app", "RequestGuard", "api_error"]

logger = logging.getLogger(__name__)

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


_MODE_HELP = "dense (vectors), keyword (BM25) or hybrid (both, reciprocal-rank fused)"
_WHERE_HELP = 'metadata filter, e.g. {"year": {"$gte": 2020}, "lang": {"$in": ["en", "de"]}} (docs/retrieval.md)'


class SearchRequest(BaseModel):
    """Several queries searched together."""

    model_config = ConfigDict(extra="forbid")
    queries: list[StrictStr] = Field(description="query texts")
    k: StrictInt | None = Field(default=None, description="results per query (default 10)")
    rescore: StrictBool | None = Field(default=None, description="float16 rescoring on/off (default: the index's)")
    mode: Literal["dense", "keyword", "hybrid"] = Field(default="dense", description=_MODE_HELP)
    where: dict | None = Field(default=None, description=_WHERE_HELP)
    fusion: Literal["rrf", "weighted"] = Field(default="rrf", description="hybrid fusion: rrf or weighted")


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

    # /docs is embedkit's own page (render_api_docs): FastAPI's Swagger UI loads from a CDN, blank offline
    app = FastAPI(title="embedkit search", version=__version__, lifespan=lifespan, default_response_class=_JSONResponse,
                  description="Search an embedkit index; add and remove documents (bearer token).",
                  docs_url=None, redoc_url=None)
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
                                       "message": internal_error(request.method, request.url.path, exc)}},
                            status_code=500, headers={"connection": "close"})

    # -- helpers --------------------------------------------------------------------------------
    def check_query(q: str, where: str = "q") -> None:
        if len(q) > cfg.max_query_chars:
            raise limit_error(422, "max_query_chars", cfg.max_query_chars,
                               f"{where} has {len(q)} characters; shorten it")
        if is_blank(q):
            raise api_error(422, "empty_query", f"{where} is empty; give some text to search for")

    def where_json(where: str | None):
        if where is None or not where.strip():
            return None
        try:
            return json.loads(where)
        except ValueError as e:
            raise api_error(422, "invalid_filter", f"where: not valid JSON ({str(e).splitlines()[0][:80]})") from None

    def check_k(k: int | None) -> int:
        if k is None:
            return cfg.default_k
        if k < 1:
            raise api_error(422, "invalid_k", f"k={k}; ask for at least 1 result")
        if k > cfg.max_k:
            raise limit_error(422, "max_k", cfg.max_k, f"k={k} asks for too many results")
        return k

    async def run_search(queries: list[str], k: int, rescore: bool | None, mode: str = "dense", where=None,
                         fusion: str = "rrf"):
        t0 = time.perf_counter()
        if mode != "dense" or where is not None:  # keyword / hybrid / filtered: searched outside the batcher
            try:
                results = await asyncio.wait_for(asyncio.to_thread(service.search_with, queries, k, rescore, mode=mode,
                                                                   where=where, fusion=fusion),
                                                 timeout=cfg.search_timeout_s)
            except asyncio.TimeoutError:
                raise api_error(503, "search_timeout", f"the search took longer than {cfg.search_timeout_s:g} s") from None
            except EmbedkitError as e:
                msg = str(e).splitlines()[0]
                raise api_error(422, "invalid_filter" if msg.startswith("where:") else "invalid_search", msg) from None
            took = time.perf_counter() - t0
            service.metrics.observe_search(len(queries), took)
            return results, took * 1000
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
                         rescore: bool | None = Query(None, description="float16 rescoring on/off"),
                         mode: Literal["dense", "keyword", "hybrid"] = Query("dense", description=_MODE_HELP),
                         where: str | None = Query(None, description=_WHERE_HELP + ", as JSON text"),
                         fusion: Literal["rrf", "weighted"] = Query("rrf", description="hybrid fusion")):
        check_query(q)
        k = check_k(k)
        (hits,), took_ms = await run_search([q], k, rescore, mode, where_json(where), fusion)
        return {"query": q, "k": k, "mode": mode, "hits": [_hit_json(h) for h in hits], "took_ms": took_ms}

    @app.post("/api/search", tags=["search"], summary="Search with several queries")
    async def search_post(req: SearchRequest):
        if not req.queries:
            raise api_error(422, "no_queries", "queries is empty; give at least one query")
        if len(req.queries) > cfg.max_queries:
            raise limit_error(413, "max_queries", cfg.max_queries, f"{len(req.queries)} queries in one request")
        for i, q in enumerate(req.queries):
            check_query(q, f"queries[{i}]")
        k = check_k(req.k)
        results, took_ms = await run_search(list(req.queries), k, req.rescore, req.mode, req.where, req.fusion)
        return {"k": k, "mode": req.mode, "results": [{"query": q, "hits": [_hit_json(h) for h in hits]}
                                    for q, hits in zip(req.queries, results)], "took_ms": took_ms}

    # -- documents ------------------------------------------------------------------------------
    @app.post("/api/documents", tags=["documents"], status_code=201, dependencies=[Depends(bearer)],
              summary="Add documents (all or nothing; acknowledged once on disk)")
    def add_documents(req: AddRequest):
        docs = req.documents
        if not docs:
            raise api_error(422, "no_documents", "documents is empty; give at least one document")
        if len(docs) > cfg.max_documents:
            raise limit_error(413, "max_documents", cfg.max_documents, f"{len(docs)} documents in one request")
        for i, d in enumerate(docs):
            if len(d.id) > cfg.max_id_chars:
                raise limit_error(422, "max_id_chars", cfg.max_id_chars, f"documents[{i}].id has {len(d.id)} characters")
            if not d.id.strip():
                raise api_error(422, "invalid_document", f"documents[{i}].id is empty; give every document an id")
            if len(d.text) > cfg.max_text_chars:
                raise limit_error(413, "max_text_chars", cfg.max_text_chars,
                                   f"documents[{i}].text has {len(d.text)} characters")
            if is_blank(d.text):
                raise api_error(422, "invalid_document", f"documents[{i}].text (id {d.id!r}) is empty")
            if d.metadata is not None:
                size = len(json.dumps(d.metadata, ensure_ascii=False).encode())
                if size > cfg.max_metadata_bytes:
                    raise limit_error(413, "max_metadata_bytes", cfg.max_metadata_bytes,
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
    def sample_documents(n: int):
        index = service.index
        return [hits[0] for hits in index.search(random_directions(n, index.dim), k=1) if hits]

    def search_now(queries: list[str], k: int):
        return [f.result(timeout=cfg.search_timeout_s) for f in service.submit_search(queries, k, None)]

    baseline = ScoreBaseline(sample_documents, search_now, lambda: len(service.index))

    async def weak_hint(hits) -> str | None:
        if baseline.needs_update():
            try:
                await asyncio.to_thread(baseline.measure)
            except Exception:  # the hint is a nicety: a failed measurement never fails the page
                logger.exception("measuring the index's typical search score failed")
        return baseline.hint(hits)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(q: str | None = None, k: str | None = None, mode: str | None = None, where: str | None = None):
        kk = cfg.default_k
        query, mode, where = q or "", mode or "dense", where or ""
        form = {"mode": mode, "where": where, "keyword": bool(getattr(service.index, "keyword", False)),
                "max_query_chars": cfg.max_query_chars}
        try:
            if k not in (None, ""):
                try:
                    kk = int(k)
                except ValueError:
                    raise api_error(422, "invalid_k", f"k={k!r} is not a whole number") from None
                kk = check_k(kk)
            if not query.strip():
                return HTMLResponse(render_page(query=query, k=kk, documents=len(service.index), **form))
            check_query(query)
            (hits,), took_ms = await run_search([query], kk, None, mode, where_json(where))
        except HTTPException as e:
            msg = e.detail.get("message", "error") if isinstance(e.detail, dict) else str(e.detail)
            return HTMLResponse(render_page(query=query[: cfg.max_query_chars], k=kk, error=msg, **form),
                                status_code=e.status_code)
        hint = await weak_hint(hits) if mode == "dense" else None  # the typical score is a dense one
        return HTMLResponse(render_page(query=query, k=kk, hits=hits, took_ms=took_ms, hint=hint, **form))

    @app.get("/doc/{doc_id:embedkit_docid}", response_class=HTMLResponse, include_in_schema=False)
    def document_page(doc_id: str, q: str | None = None):
        query = (q or "")[: cfg.max_query_chars]
        doc = service.get_document(doc_id)
        if doc is None:
            return HTMLResponse(render_document(doc_id=doc_id, query=query, error=f"no document with id {doc_id!r}"),
                                status_code=404)
        return HTMLResponse(render_document(doc, query=query))

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def api_docs():
        return HTMLResponse(render_api_docs(app.openapi()))

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        data = static_file(name)
        if data is None:
            raise api_error(404, "not_found", f"no static file {name!r}")
        return Response(data, media_type=STATIC_FILES[name], headers={"cache-control": "public, max-age=300"})

    app.add_middleware(GuardMiddleware, service=service)
    return app
