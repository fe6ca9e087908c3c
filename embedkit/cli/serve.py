"""``embedkit serve``: an index behind a JSON API and a search page (FastAPI + uvicorn)."""

from __future__ import annotations

import errno
import socket

import click

from embedkit.cli._common import POSITIVE, STATE, FiniteFloat, check_input, command, index_encoder, info, model_option
from embedkit.errors import EmbedkitError, ServeError


@command(None, name="serve")
@click.argument("index_dir", metavar="INDEX")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback needs a token unless --read-only.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--token-file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="File whose first line is the bearer token for writes (else $EMBEDKIT_TOKEN).")
@click.option("--read-only", is_flag=True, help="Refuse every write (adds and removes).")
@model_option(help="Encoder for queries and new documents (default: the one the index was built with).")
@click.option("--force", is_flag=True, help="Serve with a model whose fingerprint differs from the index's.")
@click.option("--batch-window-ms", type=FiniteFloat(0, 1000), default=2.0, show_default=True, metavar="MS",
              help="How long a search waits for others to share its model call.")
@click.option("--max-batch", type=POSITIVE, default=64, show_default=True, metavar="N", help="Most queries per model call.")
@click.option("--snapshot-interval", type=FiniteFloat(0, low_open=True), default=60.0, show_default=True, metavar="S",
              help="Save the index (and empty the write log) at most this often when there were writes.")
@click.option("--snapshot-records", type=POSITIVE, default=1000, show_default=True, metavar="N",
              help="Save sooner once the write log holds N writes.")
@click.option("--max-k", type=POSITIVE, default=100, show_default=True, metavar="N", help="Most results per query.")
@click.option("--max-query-chars", type=POSITIVE, default=2000, show_default=True, metavar="N")
@click.option("--max-documents", type=POSITIVE, default=256, show_default=True, metavar="N",
              help="Most documents in one add request.")
@click.option("--max-text-chars", type=POSITIVE, default=20_000, show_default=True, metavar="N",
              help="Longest document text accepted.")
@click.option("--max-body-bytes", type=POSITIVE, default=4 * 1024 * 1024, show_default=True, metavar="N")
@click.option("--access-log", is_flag=True, help="Log every request (uvicorn's access log).")
def serve(index_dir, host, port, token_file, read_only, model, device, force, batch_window_ms, max_batch,
          snapshot_interval, snapshot_records, max_k, max_query_chars, max_documents, max_text_chars, max_body_bytes,
          access_log):
    """Serve an index: JSON API, search page at /, OpenAPI at /docs, Prometheus /metrics.

    Writes (POST/DELETE /api/documents) need 'Authorization: Bearer TOKEN' and are acknowledged only
    once they are in the write log beside the index (INDEX.wal, fsync'ed); the index is saved in the
    background and on shutdown. See docs/serving.md.

    \b
    Example:
      python -c 'import secrets; print(secrets.token_urlsafe(32))' > token.txt
      embedkit serve scifact_idx --token-file token.txt
      curl 'http://127.0.0.1:8000/api/search?q=vitamin+D&k=5'
    """
    try:
        import uvicorn  # noqa: F401

        from embedkit.serve.app import create_app
    except ImportError as e:
        raise EmbedkitError(f"embedkit serve needs FastAPI and uvicorn ({e}); pip install 'embedkit[serve]'") from None
    from embedkit.serve.config import ServeConfig, is_loopback, read_token
    from embedkit.serve.service import SearchService

    # cheap checks first: nothing is loaded before the arguments are known to be usable
    check_input(index_dir, "INDEX", kind="dir")
    token, source = read_token(token_file)
    if not read_only and token is None and not is_loopback(host):
        raise EmbedkitError(f"--host {host} is reachable from other machines and writes are enabled without a token; "
                            "give --token-file FILE (or set EMBEDKIT_TOKEN), or add --read-only")
    config = ServeConfig(token=token, read_only=read_only, batch_window_ms=batch_window_ms, max_batch=max_batch,
                         snapshot_interval=snapshot_interval, snapshot_records=snapshot_records, max_k=max_k,
                         max_query_chars=max_query_chars, max_documents=max_documents, max_text_chars=max_text_chars,
                         max_body_bytes=max_body_bytes, default_k=min(10, max_k))
    sockets = bind_listening(host, port)  # a port in use fails now, before the model and the index load
    try:
        enc = None
        if model is not None or device is not None or STATE.backend_given:
            # --model / --backend / --device: the index's recorded model (and sub-model size) unless --model
            from embedkit._io import recover_directory
            from embedkit.retrieval.index import EmbeddingIndex

            recover_directory(index_dir)
            recorded = EmbeddingIndex.read_manifest(index_dir, verify=False)["model"]
            enc = index_encoder(recorded.get("source"), recorded.get("options") or {}, model, device)
        service = SearchService(index_dir, config, model=enc, force=force)
        from embedkit.models.resolve import model_backend

        info(f"serving {len(service.index)} documents from {index_dir} on http://{host}:{port}/ "
             f"(queries encoded with {model_backend(service.index.model)}; "
             f"writes: {'off' if read_only else 'token from ' + source if token else 'no token, loopback only'})")
        _run(create_app(service), host, port, access_log, service, sockets)
    finally:
        for sock in sockets:
            sock.close()


def bind_listening(host: str, port: int) -> list[socket.socket]:
    """Bind ``host:port`` (every address ``host`` resolves to, as uvicorn would) and return the sockets.

    Raises:
        ServeError: the port is in use, or the address cannot be bound (one line naming both).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ServeError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, addr in infos:
            if (family, addr[:2]) in seen:
                continue
            seen.add((family, addr[:2]))
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:
                continue  # an address family this machine does not have (IPv6 disabled)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
            except OSError as e:
                sock.close()
                if e.errno == errno.EADDRINUSE:
                    raise ServeError(f"--port {port}: {host}:{port} is already in use (another server is listening "
                                     "there); stop it, or choose another --port") from None
                if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) and len(infos) > 1:
                    continue  # e.g. ::1 for localhost on a machine without IPv6: the other addresses serve
                raise ServeError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None
            sockets.append(sock)
        if not sockets:
            raise ServeError(f"--host {host}: no address of it can be listened on here")
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _run(app, host: str, port: int, access_log: bool, service, sockets: list[socket.socket]) -> None:
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, access_log=access_log, log_level="info", server_header=False,
                            timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:  # Ctrl-C: uvicorn has shut down gracefully (as uvicorn.run does)
        pass
    finally:
        service.close()  # idempotent: the app's shutdown has normally closed it already
    if not server.started:
        raise SystemExit(3)
