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

A disk-backed index has one such table per segment; scores then use each segment's own statistics
(document count, average length, document frequencies), which approximate the global ones when
segments are large (see docs/retrieval.md).
"""

from __future__ import annotations

import re
import sqlite3

from embedkit.errors import EmbedkitError

__all__ = ["KEYWORD_SCHEMA", "enable_keyword", "has_keyword", "keyword_search", "match_expression"]

#: the FTS5 table and the triggers that keep it in step with ``docs`` (inside the same transaction)
KEYWORD_SCHEMA = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(text, content='docs', content_rowid='key', "
    "tokenize='porter unicode61 remove_diacritics 2')",
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
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))[:MAX_QUERY_TERMS]
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


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
