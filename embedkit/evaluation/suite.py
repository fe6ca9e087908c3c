"""Run mteb tasks under several compression specs, encoding every text once.

For each task the data is loaded once; then for each spec (``float`` always first: it is the
reference, and its pass records the texts the other specs are fitted on) a fresh copy of the task
(same data, same random state) is scored by ``mteb.evaluate`` with a
:class:`~embedkit.evaluation.compressed_encoder.CompressedEncoder` over one shared
:class:`~embedkit.evaluation.compressed_encoder.EmbeddingStore`. Only the float pass can encode
(and texts already in the on-disk cache are not encoded at all); the other specs compress vectors
held in memory.

Outputs (``write_outputs``): ``summary.json``, ``summary.md`` (a table: one row per task, one column
per spec, bytes per vector in the header) and ``summary.png`` (each task's main score against bytes
per vector); with ``output`` given, mteb's own result files under ``DIR/results/MODEL/REVISION/``
(float) and ``.../experiments/compression_SPEC/`` (other specs).

Example:
    .. code-block:: python

        from embedkit import load_encoder
        from embedkit.evaluation import run_suite, sts_task, summary_markdown

        res = run_suite(load_encoder(), [sts_task("stsb.test.tsv")], "float;int8;binary")
        print(summary_markdown(res))
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedkit.errors import EmbedkitError, SpecError

__all__ = ["DEFAULT_SPECS", "parse_specs", "run_suite", "summary_markdown", "plot_summary", "write_outputs"]

DEFAULT_SPECS = "float;int8;binary;mrl:128;mrl:128,binary"


def parse_specs(specs: str | Sequence[str] | None, *, dim: int | None = None) -> list[str]:
    """``"float;int8;binary"`` (or a list) -> validated, de-duplicated specs, ``float`` first.

    Specs are separated by ``;`` because a spec itself may contain commas (``mrl:128,binary``).
    Every spec is checked before any is run: with ``dim`` (the model's embedding dimension) also the
    sizes that depend on it (``mrl:512`` on 384-d embeddings, ``lsh:NBITS`` above 32 bits per dimension).

    Raises:
        SpecError: an empty list or a spec that does not parse or does not fit ``dim`` (the message
            names it; commas between whole specs get the hint to separate them with ``;``).
    """
    from embedkit.compression.spec import check_spec, parse_spec

    if specs is None:
        specs = "float"
    items = specs.split(";") if isinstance(specs, str) else list(specs)
    out: list[str] = []
    for raw in items:
        s = str(raw).strip()
        if not s:
            continue
        try:
            stages = parse_spec(s)
            check_spec(s, dim=dim)  # stage order (a quantizer only last), sizes against dim
        except SpecError as e:
            raise SpecError(f"--specs: {e}{_semicolon_hint(s)}") from None
        canon = ",".join(name + (":" + _arg_str(kw) if kw else "") for name, kw in stages)
        if canon not in out:
            out.append(canon)
    if not out:
        raise SpecError("--specs is empty; give specs separated by ';', e.g. 'float;int8;binary;mrl:128,binary'")
    if "float" in out:
        out.remove("float")
    return ["float", *out]


def _check_fit_sizes(specs: Sequence[str], task: str, X) -> None:
    """Every spec against the vectors it will be fitted on for ``task`` (e.g. pq:48x8 needs 256 of them)."""
    from embedkit.compression.spec import check_spec

    for spec in specs:
        try:
            check_spec(spec, dim=X.shape[1], n_train=len(X))
        except SpecError as e:
            raise SpecError(f"--specs: task {task}: {e}") from None


def _semicolon_hint(spec: str) -> str:
    """A hint when ``spec`` is whole specs joined by commas (``float,binary``): they take ``;``."""
    from embedkit.compression.spec import check_spec

    parts = [p.strip() for p in spec.split(",")]
    if len(parts) < 2:
        return ""
    try:
        for p in parts:
            check_spec(p)
    except SpecError:
        return ""  # not whole specs
    return f" (specs are separated by ';', a spec's own stages by ','; did you mean {';'.join(parts)!r}?)"


def _arg_str(kw: dict[str, Any]) -> str:
    if set(kw) == {"m", "nbits"}:
        return f"{kw['m']}x{kw['nbits']}"
    if "bits" in kw and "width" in kw:
        return f"{kw['bits']}x{kw['width']}"
    return "x".join(str(v) for v in kw.values())


def _quiet_datasets() -> None:
    """Hide the ``datasets`` library's per-map progress bars (noise next to the per-task bar)."""
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


_HUB_ERRORS = ("DatasetNotFoundError", "LocalEntryNotFoundError", "OfflineModeIsEnabled", "HfHubHTTPError")


def _load_task_data(task) -> None:
    """``task.load_data()``; a dataset that cannot be fetched is a one-line EmbedkitError naming the task."""
    from embedkit.evaluation.mteb_tasks import LOCAL_HINT

    name = task.metadata.name
    try:
        task.load_data()
    except EmbedkitError:
        raise
    except (ConnectionError, OSError) as e:  # hub unreachable, dataset not downloadable
        raise EmbedkitError(f"could not load the data of MTEB task {name} ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); {LOCAL_HINT}") from e
    except Exception as e:
        if type(e).__name__ in _HUB_ERRORS:
            raise EmbedkitError(f"could not load the data of MTEB task {name} ({type(e).__name__}); {LOCAL_HINT}") from e
        raise


def _main_score(task_result) -> float:
    return float(task_result.get_score())


def run_suite(model, tasks: Sequence, specs: str | Sequence[str] | None = None, *, output: str | os.PathLike | None = None,
              cache=None, batch_size: int = 64, show_progress: bool = True, asymmetric_queries: bool = False) -> dict[str, Any]:
    """Score every task under every spec; returns a JSON-able summary.

    Args:
        model: a SentenceTransformer.
        tasks: mteb task instances (registered ones from ``mteb.get_tasks`` or local ones from
            :mod:`embedkit.evaluation.mteb_tasks`).
        specs: ``"float;int8;binary"`` or a list; ``float`` is always added and run first.
        output: folder for mteb's result files (``None``: results are not written).
        cache: embedding cache for :func:`~embedkit.cache.encode_cached` (``False``: none).
        show_progress: one progress bar per task (over its specs) on stderr.
        asymmetric_queries: see :class:`~embedkit.evaluation.compressed_encoder.CompressedEncoder`.

    Returns:
        ``{"model", "revision", "specs", "tasks": [...], "rows": [...], "seconds", "texts_encoded"}``;
        each row holds ``task``, ``type``, ``spec``, ``main_score`` (mteb's, 0..1), ``metric``,
        ``bytes_per_vector`` and ``seconds``.
    """
    import mteb
    from tqdm.auto import tqdm

    from embedkit.evaluation.compressed_encoder import CompressedEncoder, EmbeddingStore, model_meta_for

    dim_of = getattr(model, "get_embedding_dimension", None) or getattr(model, "get_sentence_embedding_dimension", None)
    spec_list = parse_specs(specs, dim=dim_of() if dim_of is not None else None)  # every spec, before any runs
    if not tasks:
        raise EmbedkitError("no tasks to evaluate")
    names = [t.metadata.name for t in tasks]
    if len(set(names)) != len(names):
        raise EmbedkitError(f"task names must be unique, got {names}")
    if output is not None:  # marked first, so that an interrupted run can be replaced with overwrite
        from embedkit._io import mark_output

        Path(output).mkdir(parents=True, exist_ok=True)
        # mteb's result cache, written as the run goes (an interrupted run stays replaceable)
        mark_output(output, "eval", patterns=("results", "results/*", "remote", "remote/*", "leaderboard",
                                              "leaderboard/*", "summary.*"))
    result_cache = mteb.ResultCache(str(output)) if output is not None else None
    _quiet_datasets()
    store = EmbeddingStore(model, cache=cache, batch_size=batch_size, show_progress=show_progress)
    meta = model_meta_for(model)
    rows: list[dict[str, Any]] = []
    task_info: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for task in tasks:
        name = task.metadata.name
        t_task = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _load_task_data(task)
        state = copy.deepcopy((task.rng_state, task.np_rng))
        bar = tqdm(spec_list, desc=name, unit="spec", disable=not show_progress, leave=True)
        for spec in bar:
            bar.set_postfix_str(spec)
            encoder = CompressedEncoder(store, spec, asymmetric_queries=asymmetric_queries)
            run_task = copy.copy(task)
            run_task.rng_state, run_task.np_rng = copy.deepcopy(state)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = mteb.evaluate(encoder, run_task, cache=result_cache, overwrite_strategy="always",
                                    encode_kwargs={"batch_size": batch_size, "show_progress_bar": False},
                                    show_progress_bar=False, co2_tracker=False)
            if res.exceptions:
                raise EmbedkitError(f"task {name} failed under spec {spec}: {res.exceptions[0].exception}")
            if spec == spec_list[0] and len(spec_list) > 1 and store.has_task(name):
                _check_fit_sizes(spec_list[1:], name, store.fit_sample(name))  # before the next spec runs
            tr = res.task_results[0]
            rows.append({
                "task": name, "type": task.metadata.type, "spec": spec, "metric": task.metadata.main_score,
                "main_score": _main_score(tr), "bytes_per_vector": encoder.bytes_per_vector(name),
                "seconds": time.perf_counter() - t0,
            })
        bar.close()
        task_info.append({"task": name, "type": task.metadata.type, "metric": task.metadata.main_score,
                          "seconds": time.perf_counter() - t_task})
        if getattr(task, "data_loaded", False):
            task.unload_data()
    out = {
        "model": meta.name, "revision": meta.revision, "specs": spec_list, "tasks": task_info, "rows": rows,
        "seconds": time.perf_counter() - t_all, "texts_encoded": store.texts_requested,
        "asymmetric_queries": asymmetric_queries,
    }
    if output is not None:
        out["results_dir"] = str(Path(output) / "results")
    return out


def summary_markdown(result: dict[str, Any]) -> str:
    """Markdown table: one row per task, one column per spec (main score x100)."""
    specs = result["specs"]
    by = {(r["task"], r["spec"]): r for r in result["rows"]}
    tasks = [t["task"] for t in result["tasks"]]

    def bytes_of(spec):
        vals = {by[(t, spec)]["bytes_per_vector"] for t in tasks if (t, spec) in by}
        return "/".join(str(v) for v in sorted(vals)) if vals else "?"

    head = "| task | metric | " + " | ".join(f"{s} ({bytes_of(s)} B)" for s in specs) + " |"
    sep = "|" + "---|" * (len(specs) + 2)
    lines = [head, sep]
    for t in result["tasks"]:
        cells = [f"{100 * by[(t['task'], s)]['main_score']:.2f}" if (t["task"], s) in by else "" for s in specs]
        lines.append(f"| {t['task']} | {t['metric']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_summary(result: dict[str, Any], path: str | os.PathLike, *, caption: str = "") -> str:
    """PNG: one panel per task, main score (x100) against bytes per vector (log scale), specs labelled.

    ``caption`` (printed under the panels) says what data each task used, e.g. which subset.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t["task"] for t in result["tasks"]]
    n = len(tasks)
    cols = min(n, 3)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.6 * nrows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        pts = sorted((r["bytes_per_vector"], 100 * r["main_score"], r["spec"]) for r in result["rows"] if r["task"] == task)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", color="tab:blue")
        for x, y, s in pts:
            ax.annotate(s, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xscale("log", base=2)
        ax.margins(x=0.25, y=0.15)
        ax.set_xlabel("bytes per vector")
        metric = next(r["metric"] for r in result["rows"] if r["task"] == task)
        ax.set_ylabel(f"{metric} x100")
        ax.set_title(task, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{result['model']}: quality vs bytes per vector", fontsize=10)
    if caption:
        fig.text(0.01, 0.005, caption, fontsize=7.5, ha="left", va="bottom", wrap=True)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
    else:
        fig.tight_layout()
    import io

    from embedkit._io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


def write_outputs(result: dict[str, Any], output: str | os.PathLike) -> dict[str, str]:
    """Write ``summary.json``, ``summary.md`` and ``summary.png`` into ``output``; return their paths.

    The folder is marked as an embedkit ``"eval"`` output (``embedkit-output.json``), so a later run
    may replace it with ``overwrite`` (:func:`embedkit._io.prepare_output`).
    """
    from embedkit._io import atomic_write_bytes, atomic_write_json, mark_output

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = {"json": str(output / "summary.json"), "markdown": str(output / "summary.md"),
             "plot": str(output / "summary.png")}
    atomic_write_json(output / "summary.json", {**result, "files": paths})
    atomic_write_bytes(output / "summary.md", summary_markdown(result).encode())
    plot_summary(result, output / "summary.png")
    mark_output(output, "eval")  # last: it lists what the folder holds now
    return paths
