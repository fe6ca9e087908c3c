"""The keyword (BM25) side of an index: an SQLite FTS5 table inside the docstore's own database.

The FTS5 table ``docs_fts`` is an *external-content* table over ``docs.text`` (the text is stored
once) kept in step by two triggers on ``docs``: every insert and delete of a document updates the
keyword index in the same SQLite transaction, so the vector side's all-or-nothing add/remove needs
no extra code and a killed process cannot leave the two apart (SQLite rolls the journal back).

Ranking is FTS5's built-in ``bm25()`` (k1 = 1.2, b = 0.75, idf ``log((N - n + 0.5) / (n + 0.5))``,
the Robertson/Sparck-Jones form that Elasticsearch's BEIR BM25 baseline also uses), over the
``porter unicode61`` tokenizer (Unicode word characters, case and diacritics folded, Porter stems).
Queries are tokenised here into words and sent as a quoted OR of those words, so FTS5's query syntax
(``NEAR``, ``*``, column filters) can never be injected through a query. Scores are returned
positive (higher is better), like the dense scores.

A disk-backed index has one such table per segment. One segment without tombstones is ranked by
``bm25()`` itself; otherwise :func:`global_keyword_search` scores every segment's matching documents
with the index-wide statistics — document count and total length (each table's averages record,
minus the tombstoned documents' lengths from ``docs_fts_docsize``) and each query phrase's document
frequency and per-document frequency (an ``fts5vocab`` *instance* table over each segment's index,
tombstoned documents left out) — with FTS5's own formula, so the ranking and the scores are those one
table holding the same documents would give (see docs/retrieval.md).
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from embedkit.errors import EmbedkitError

__all__ = ["BM25_B", "BM25_K1", "KEYWORD_SCHEMA", "SegmentMatches", "enable_keyword", "global_keyword_search",
           "has_keyword", "keyword_search", "match_expression", "query_phrases", "segment_matches"]

#: FTS5's tokenizer for the keyword table (and for query words in :func:`query_phrases`)
TOKENIZE = "porter unicode61 remove_diacritics 2"
#: FTS5 ``bm25()``'s constants (fts5_aux.c)
BM25_K1, BM25_B = 1.2, 0.75

#: the FTS5 table and the triggers that keep it in step with ``docs`` (inside the same transaction)
KEYWORD_SCHEMA = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(text, content='docs', content_rowid='key', "
    f"tokenize='{TOKENIZE}')",
    "CREATE TRIGGER IF NOT EXISTS docs_fts_ai AFTER INSERT ON docs BEGIN "
    "INSERT INTO docs_fts(rowid, text) VALUES (new.key, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS docs_fts_ad AFTER DELETE ON docs BEGIN "
    "INSERT INTO docs_fts(docs_fts, rowid, text) VALUES ('delete', old.key, old.text); END",
)
_WORD = re.compile(r"\w+", re.UNICODE)
#: query words used at most (a pasted paragraph stays a fast query)
MAX_QUERY_TERMS = 64


def has_keyword(conn: sqlite3.Connection) -> bool:
    """True when the database holds the keyword table."""
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'docs_fts'").fetchone()
    return row is not None


def enable_keyword(conn: sqlite3.Connection) -> None:
    """Create the keyword table and its triggers, index the documents already there, and commit."""
    try:
        fresh = not has_keyword(conn)
        for stmt in KEYWORD_SCHEMA:
            conn.execute(stmt)
        if fresh:
            conn.execute("INSERT INTO docs_fts(docs_fts) VALUES ('rebuild')")
        conn.commit()
    except sqlite3.OperationalError as e:  # pragma: no cover - an SQLite built without FTS5
        conn.rollback()
        raise EmbedkitError(f"this Python's SQLite has no FTS5 ({e}); build the index with keyword=False "
                            "(--no-keyword)") from e


def match_expression(query: str) -> str | None:
    """The FTS5 MATCH expression of a query: its words, each quoted, joined by OR (None: no word).

    Example:
        >>> match_expression('vitamin-D "and" bone*')
        '"vitamin" OR "d" OR "and" OR "bone"'
    """
    words = _query_words(query)
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


def _query_words(query: str) -> list[str]:
    return list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))[:MAX_QUERY_TERMS]


def keyword_search(conn: sqlite3.Connection, query: str, k: int, *, where_sql: str | None = None,
                   where_params: tuple = ()) -> list[tuple[int, float]]:
    """The ``k`` best ``(key, bm25 score)`` of ``query``, best first, optionally among the documents a
    compiled filter (:class:`~embedkit.retrieval.filters.Filter`) allows."""
    expr = match_expression(query)
    if expr is None:
        return []
    sql = "SELECT rowid, -bm25(docs_fts) FROM docs_fts WHERE docs_fts MATCH ?"
    params: tuple = (expr,)
    if where_sql is not None:
        sql += f" AND rowid IN (SELECT key FROM docs WHERE {where_sql})"
        params += tuple(where_params)
    sql += " ORDER BY bm25(docs_fts), rowid LIMIT ?"
    return [(int(r[0]), float(r[1])) for r in conn.execute(sql, params + (int(k),))]


# -- one ranking over several FTS5 tables (disk segments) ------------------------------------------
_TOKENIZER_LOCK = threading.Lock()
_tokenizer_db: sqlite3.Connection | None = None


def query_phrases(query: str) -> list[tuple[str, ...]]:
    """The phrases of :func:`match_expression` as FTS5 tokenises them: one tuple of index terms per
    query word, in query order (Porter stems; a word like ``a_b`` is the two-term phrase ``a b``; a
    word without a term is left out, as FTS5 matches nothing for it).

    Example:
        >>> query_phrases("Running cafés")
        [('run',), ('cafe',)]
    """
    global _tokenizer_db
    words = _query_words(query)
    if not words:
        return []
    with _TOKENIZER_LOCK:
        if _tokenizer_db is None:
            conn = sqlite3.connect(":memory:", check_same_thread=False)
            conn.execute(f"CREATE VIRTUAL TABLE q USING fts5(text, tokenize='{TOKENIZE}')")
            conn.execute("CREATE VIRTUAL TABLE qv USING fts5vocab(q, 'instance')")
            _tokenizer_db = conn
        conn = _tokenizer_db
        conn.executemany("INSERT INTO q(rowid, text) VALUES (?, ?)", list(enumerate(words)))
        rows = conn.execute("SELECT doc, offset, term FROM qv").fetchall()
        conn.execute("DELETE FROM q")
    terms: dict[int, list[tuple[int, str]]] = {}
    for doc, offset, term in rows:
        terms.setdefault(doc, []).append((offset, term))
    return [tuple(t for _, t in sorted(terms[i])) for i in range(len(words)) if i in terms]


def _varint(blob: bytes, pos: int = 0) -> tuple[int, int]:
    """SQLite's variable-length integer at ``pos`` (as FTS5 stores sizes): ``(value, next position)``."""
    value = 0
    for i in range(8):
        byte = blob[pos + i]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos + i + 1
    return (value << 8) | blob[pos + 8], pos + 9


def _totals(conn: sqlite3.Connection) -> tuple[int, int]:
    """``(documents, tokens)`` of the keyword table: its averages record (``docs_fts_data`` row 1)."""
    row = conn.execute("SELECT block FROM docs_fts_data WHERE id = 1").fetchone()
    if row is None or not row[0]:
        return 0, 0
    n, pos = _varint(row[0])
    return n, (_varint(row[0], pos)[0] if pos < len(row[0]) else 0)


@dataclass
class SegmentMatches:
    """What one FTS5 table contributes to an index-wide BM25 ranking: its live document and token
    counts (``removed_tokens``: the total length of its tombstoned documents, left out of
    ``tokens``), the live documents matching any query phrase (``keys``, sorted, and their
    ``lengths``), each phrase's occurrences in them (``freqs``, phrases × keys) and each phrase's
    number of live documents (``doc_freqs``)."""

    documents: int = 0
    tokens: int = 0
    removed_tokens: int = 0
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0))
    freqs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    doc_freqs: list[int] = field(default_factory=list)


def _phrase_hits(conn: sqlite3.Connection, phrase: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, occurrences)`` of the phrase (consecutive terms, as an FTS5 phrase matches), keys sorted."""
    vocab = "temp.docs_fts_vocab_instance"
    if len(phrase) == 1:
        rows = conn.execute(f"SELECT doc, COUNT(*) FROM {vocab} WHERE term = ? GROUP BY doc ORDER BY doc",
                            phrase).fetchall()
    else:
        places = [set(conn.execute(f"SELECT doc, offset FROM {vocab} WHERE term = ?", (t,))) for t in phrase]
        found: dict[int, int] = {}
        for doc, off in places[0]:
            if all((doc, off + j) in places[j] for j in range(1, len(phrase))):
                found[doc] = found.get(doc, 0) + 1
        rows = sorted(found.items())
    arr = np.array(rows, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def segment_matches(conn: sqlite3.Connection, phrases: Sequence[tuple[str, ...]], removed: np.ndarray,
                    removed_tokens: int | None = None) -> SegmentMatches:
    """One table's part of :func:`global_keyword_search`; ``removed``: its tombstoned keys, sorted
    (left out of every count), ``removed_tokens``: their total length when the caller already knows it.

    The caller holds the connection's lock. The ``fts5vocab`` table is created in ``temp`` (so a
    read-only segment file works too).
    """
    conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.docs_fts_vocab_instance "
                 "USING fts5vocab(main, docs_fts, instance)")
    n, tokens = _totals(conn)
    removed = np.asarray(removed, dtype=np.int64)
    if len(removed) and removed_tokens is None:
        removed_tokens = int(_lengths(conn, removed).sum())
    removed_tokens = removed_tokens if len(removed) else 0
    hits = []
    for phrase in phrases:
        keys, counts = _phrase_hits(conn, phrase)
        if len(removed):
            alive = ~np.isin(keys, removed)
            keys, counts = keys[alive], counts[alive]
        hits.append((keys, counts))
    keys = np.unique(np.concatenate([h[0] for h in hits])) if hits else np.zeros(0, dtype=np.int64)
    freqs = np.zeros((len(hits), len(keys)))
    for i, (k, c) in enumerate(hits):
        freqs[i, np.searchsorted(keys, k)] = c
    return SegmentMatches(n - len(removed), tokens - removed_tokens, removed_tokens, keys,
                          _lengths(conn, keys).astype(np.float64), freqs, [len(h[0]) for h in hits])


def _lengths(conn: sqlite3.Connection, keys: np.ndarray) -> np.ndarray:
    """Token count of each document key (``docs_fts_docsize``), in the order of ``keys`` (sorted)."""
    out = np.zeros(len(keys), dtype=np.int64)
    for s in range(0, len(keys), 900):
        chunk = [int(k) for k in keys[s: s + 900]]
        q = f"SELECT sz FROM docs_fts_docsize WHERE id IN ({','.join('?' * len(chunk))}) ORDER BY id"
        sizes = [sz[0] if len(sz) == 1 else ((sz[0] & 0x7F) << 7) | sz[1] if len(sz) == 2 else _varint(sz)[0]
                 for (sz,) in conn.execute(q, chunk)]
        out[s: s + len(sizes)] = sizes
    return out


def global_keyword_search(parts: Sequence[SegmentMatches], k: int, *, allowed=None) -> list[tuple[int, float]]:
    """The ``k`` best ``(key, bm25)`` over several tables as if they were one: FTS5's ``bm25()``
    (fts5_aux.c: ``idf = log((N - n + 0.5) / (n + 0.5))``, 1e-6 when not positive; per phrase
    ``idf * (f * (k1 + 1) / (f + k1 * (1 - b + b * len / avglen)))``, summed in query order, the same
    floating-point operations) with N, the total length and each phrase's n summed over ``parts``.
    Ties go to the smaller key, as :func:`keyword_search` orders them. ``allowed``: the sorted keys
    a filter allows (None: all).
    """
    n_docs = sum(p.documents for p in parts)
    if n_docs <= 0 or not parts or not parts[0].doc_freqs:
        return []
    avg_len = sum(p.tokens for p in parts) / n_docs
    idf = []
    for i in range(len(parts[0].doc_freqs)):
        n_hit = sum(p.doc_freqs[i] for p in parts)
        value = math.log((n_docs - n_hit + 0.5) / (n_hit + 0.5))
        idf.append(value if value > 0.0 else 1e-6)
    all_keys, all_scores = [], []
    for p in parts:
        norm = BM25_K1 * ((1 - BM25_B) + BM25_B * p.lengths / avg_len)
        score = np.zeros(len(p.keys))
        for i, f in enumerate(p.freqs):
            score = score + idf[i] * ((f * (BM25_K1 + 1.0)) / (f + norm))
        all_keys.append(p.keys)
        all_scores.append(score)
    keys, scores = np.concatenate(all_keys), np.concatenate(all_scores)
    if allowed is not None:
        ok = np.isin(keys, np.asarray(allowed, dtype=np.int64))
        keys, scores = keys[ok], scores[ok]
    order = np.lexsort((keys, -scores))[:k]
    return list(zip(keys[order].tolist(), scores[order].tolist()))
