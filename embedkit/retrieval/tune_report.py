"""The index tuner's table, Pareto front and plot (rows are the dicts :mod:`embedkit.retrieval.tune` measures)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_table", "pareto_flags", "plot_rows", "rows_frame"]

_COLUMNS = (("quality", "{:.4f}"), ("bytes_per_vector", "{:g}"), ("code_bytes_per_vector", "{:g}"),
            ("rescore_bytes_per_vector", "{:g}"), ("ram_bytes", None), ("query_ms", "{:.3f}"),
            ("encode_docs_per_s", "{:.1f}"))
_HEAD = {"quality": None, "bytes_per_vector": "B/vec", "code_bytes_per_vector": "code B",
         "rescore_bytes_per_vector": "rescore B", "ram_bytes": "RAM after load", "query_ms": "query ms",
         "encode_docs_per_s": "encode docs/s"}


def pareto_flags(rows: Sequence[dict]) -> None:
    """Set ``row["pareto"]``: no other row has quality >=, bytes per vector <= and query ms <= with one strict."""
    def key(r):
        return r["quality"], -r["bytes_per_vector"], -(r["query_ms"] or 0.0)

    for r in rows:
        a = key(r)
        r["pareto"] = not any(all(x >= y for x, y in zip(key(o), a)) and key(o) != a for o in rows if o is not r)


def _size(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def format_table(rows: Sequence[dict], metric: str) -> str:
    """Aligned text: configuration, quality (``metric``), bytes per vector (total, code, rescoring), RAM after
    load, p50 query ms, encode docs/s; the chosen row starts with ``*``."""
    head = ["", "configuration", metric] + [_HEAD[k] for k, _ in _COLUMNS[1:]]
    lines = [head]
    for r in rows:
        cells = ["*" if r.get("chosen") else "", r["label"]]
        for k, fmt in _COLUMNS:
            v = r.get(k)
            cells.append(_size(v) if k == "ram_bytes" else "-" if v is None else fmt.format(v))
        lines.append(cells)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = []
    for line in lines:
        out.append("  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                   .rstrip())
    return "\n".join(out)


def rows_frame(rows: Sequence[dict]):
    """The rows as a pandas DataFrame (pandas is optional: ImportError names it)."""
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - pandas ships with the dev extras
        raise ImportError("TuneResult.to_frame() needs pandas (pip install pandas); .rows holds the same table") from e
    return pd.DataFrame(list(rows))


def plot_rows(rows: Sequence[dict], path, metric: str, settings: dict) -> None:
    """Quality against bytes per vector (log scale): every codec measured (grey), the fully measured rows
    by index type, the Pareto front joined, the chosen one starred, the budget dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from embedkit._io import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(7, 4.5))
    codec = [r for r in rows if r["query_ms"] is None]
    ax.scatter([r["bytes_per_vector"] for r in codec], [r["quality"] for r in codec], s=14, c="0.7",
               label="codec stage only")
    for kind, marker in (("flat", "o"), ("ivf", "s"), ("hnsw", "^")):
        pts = [r for r in rows if r["query_ms"] is not None and r["index_type"] == kind]
        if pts:
            ax.scatter([r["bytes_per_vector"] for r in pts], [r["quality"] for r in pts], marker=marker, s=26,
                       label=kind)
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r["bytes_per_vector"])
    if front:
        ax.plot([r["bytes_per_vector"] for r in front], [r["quality"] for r in front], "k-", lw=0.8, label="Pareto front")
    best = next((r for r in rows if r.get("chosen")), None)
    if best is not None:
        ax.scatter([best["bytes_per_vector"]], [best["quality"]], marker="*", s=220, c="crimson", zorder=5,
                   label=f"chosen: {best['label']}")
    limit = settings.get("bytes_per_vector_limit")
    if limit:
        ax.axvline(limit, color="0.4", ls="--", lw=0.8, label=f"budget {limit:g} B/vector")
    ax.set_xscale("log")
    ax.set_xlabel("bytes per vector (code + rescoring + structure)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
