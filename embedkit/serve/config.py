"""Server settings: limits, batching, snapshots, security. One validated dataclass."""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

from embedkit.errors import EmbedkitError
from embedkit.validation import check_finite_number, check_positive_int

__all__ = ["ServeConfig", "is_loopback", "read_token", "MIN_TOKEN_CHARS"]

logger = logging.getLogger(__name__)

#: a shorter bearer token is refused (guessable)
MIN_TOKEN_CHARS = 16


@dataclass
class ServeConfig:
    """Everything ``embedkit serve`` can be told, with the defaults a small team would start from.

    Limits (each refused with a 4xx JSON error that names it):
        max_body_bytes: request body size.
        max_documents: documents in one ``POST /api/documents``.
        max_queries: queries in one ``POST /api/search``.
        max_query_chars: characters in one query.
        max_k: results per query.
        max_text_chars: characters in one document's text.
        max_id_chars: characters in one document id.
        max_metadata_bytes: one document's metadata, as JSON.
        max_pending: queries waiting for the encoder (503 beyond it: the server is overloaded).

    Batching: searches that arrive within ``batch_window_ms`` of each other (at most ``max_batch``)
    are encoded in one model call.

    Snapshots: the index is saved (and the write log emptied) in the background every
    ``snapshot_interval`` seconds when there were writes, sooner when the log holds
    ``snapshot_records`` records, and on clean shutdown.
    """

    token: str | None = field(default=None, repr=False)
    read_only: bool = False
    max_body_bytes: int = 4 * 1024 * 1024
    max_documents: int = 256
    max_queries: int = 64
    max_query_chars: int = 2000
    max_k: int = 100
    max_text_chars: int = 20_000
    max_id_chars: int = 256
    max_metadata_bytes: int = 16 * 1024
    max_pending: int = 2048
    batch_window_ms: float = 2.0
    max_batch: int = 64
    search_timeout_s: float = 30.0
    snapshot_interval: float = 60.0
    snapshot_records: int = 1000
    default_k: int = 10

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_documents", "max_queries", "max_query_chars", "max_k", "max_text_chars",
                     "max_id_chars", "max_metadata_bytes", "max_pending", "max_batch", "snapshot_records", "default_k"):
            check_positive_int(getattr(self, name), name)
        check_finite_number(self.batch_window_ms, "batch_window_ms", low=0.0, high=1000.0)
        check_finite_number(self.search_timeout_s, "search_timeout_s", low=0.0, low_inclusive=False)
        check_finite_number(self.snapshot_interval, "snapshot_interval", low=0.0, low_inclusive=False)
        self.default_k = min(self.default_k, self.max_k)
        if self.token is not None:
            if not isinstance(self.token, str) or len(self.token) < MIN_TOKEN_CHARS or self.token != self.token.strip():
                raise EmbedkitError(f"the bearer token must be at least {MIN_TOKEN_CHARS} characters without surrounding "
                                    "whitespace; make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")

    def limits(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k.startswith("max_")}


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | os.PathLike | None, env: str = "EMBEDKIT_TOKEN") -> tuple[str | None, str | None]:
    """The bearer token from ``token_file`` (first) or the environment variable ``env``.

    Returns ``(token, source)``; ``(None, None)`` when neither is set.

    Raises:
        EmbedkitError: the file is missing, unreadable or empty.
    """
    if token_file is not None:
        p = Path(token_file).expanduser()
        try:
            mode = p.stat().st_mode
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise EmbedkitError(f"--token-file {str(token_file)!r}: file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise EmbedkitError(f"--token-file {str(token_file)!r}: cannot read it ({e})") from None
        token = text.strip()
        if not token:
            raise EmbedkitError(f"--token-file {str(token_file)!r} is empty; put the token on its first line")
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            logger.warning("--token-file %s is readable by other users; chmod 600 it", token_file)
        return token, f"--token-file {token_file}"
    value = os.environ.get(env)
    if value is not None and value.strip():
        return value.strip(), f"${env}"
    return None, None
