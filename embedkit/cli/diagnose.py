"""``embedkit diagnose``: label-free embedding diagnostics with an HTML report, and ``diagnose ches``."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import click

from embedkit.errors import EmbedkitError

CTX = {"help_option_names": ["-h", "--help"]}


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=float))


def _read_labels(path: str) -> list[str]:
    from embedkit.data import read_text_lines

    return read_text_lines(path)


@click.group(invoke_without_command=True, context_settings=CTX)
@click.option("--model", "model_name", default=None, help="Sentence-transformers folder or hub name; default all-MiniLM-L6-v2.")
@click.option("--texts", type=click.Path(dir_okay=False), help="Text file, one text per line (.gz ok).")
@click.option("--labels", type=click.Path(dir_okay=False), help="Optional: one label per line, same count as --texts (adds the Fisher ratio).")
@click.option("--report", type=click.Path(dir_okay=False), help="Write a self-contained HTML report here.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False), default=None,
              help="Also save the report's PNG plots in this folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the full JSON summary on stdout.")
@click.option("--temperature", type=float, default=None, help="Apply TempScale with this tau before diagnosing.")
@click.option("--max-texts", type=int, default=5000, show_default=True, help="Use the first N texts.")
@click.option("--bias/--no-bias", default=True, show_default=True,
              help="Gender-bias projections of the model's word vectors (needs the debias word lists).")
@click.option("--bias-lists", type=click.Path(file_okay=False), default=None,
              help="Folder with the debiaswe JSON lists; default <data>/debias.")
@click.pass_context
def diagnose(ctx, model_name, texts, labels, report, plots_dir, as_json, temperature, max_texts, bias, bias_lists):
    """Diagnose an embedding model on your texts: RankMe, label-free separability, length collapse, bias.

    \b
    Example:
      embedkit diagnose --texts docs.txt --report report.html
      embedkit diagnose --model ./my-model --texts docs.txt --labels labels.txt --json
      embedkit diagnose ches --model ./my-lm --pairs prefs.jsonl --top 5%
      embedkit diagnose tempscale --texts long_docs.txt --out repaired-model
    """
    if ctx.invoked_subcommand is not None:
        return
    if not texts:
        raise click.UsageError("--texts is required (or use a subcommand, e.g. `embedkit diagnose ches`)")
    from embedkit.analysis.diagnose import bias_report, diagnose_embeddings
    from embedkit.analysis.length_collapse import token_lengths
    from embedkit.cache import encode_cached
    from embedkit.data import read_text_lines
    from embedkit.models.loading import load_encoder

    lines = read_text_lines(texts)[:max_texts]
    labs = None
    if labels:
        labs = _read_labels(labels)
        n_all = len(read_text_lines(texts))
        if len(labs) != n_all:
            raise EmbedkitError(f"{labels}: {len(labs)} labels for {n_all} texts in {texts}; counts must match")
        labs = labs[:max_texts]
    if len(lines) < 3:
        raise EmbedkitError(f"{texts}: {len(lines)} text(s); at least 3 are needed")
    model = load_encoder(model_name, temperature=temperature)
    click.echo(f"encoding {len(lines)} texts ...", err=True)
    E = encode_cached(model, lines, desc="encoding")
    summary = diagnose_embeddings(E, lengths=token_lengths(model, lines), labels=labs)
    summary["model"] = str(model_name or "all-MiniLM-L6-v2")
    summary["temperature"] = temperature or 1.0
    arrays = summary.pop("_arrays")
    if bias:
        try:
            summary["bias"] = bias_report(model, bias_lists)
        except EmbedkitError as e:
            summary["bias"] = {"skipped": str(e)}
    if report or plots_dir:
        _write_report(report, summary, arrays, plots_dir)
        if report:
            summary["report"] = str(report)
    if as_json:
        _echo_json(summary)
    else:
        lc = summary.get("length_collapse", {})
        click.echo(f"texts             {summary['n_texts']} x {summary['dim']}")
        click.echo(f"RankMe            {summary['rankme']:.1f} ({100 * summary['rankme_fraction_of_dim']:.0f}% of max)")
        click.echo(f"separability (PH) {summary['separability']['separability']:.3f}  (persistence score "
                   f"{summary['separability']['persistence_score']:.3f})")
        if "fisher_ratio" in summary:
            click.echo(f"Fisher ratio      {summary['fisher_ratio']:.3f}")
        if "collapse" in lc:
            click.echo(f"length collapse   {lc['collapse']:+.3f}  (mean cosine longest - shortest bucket)")
        b = summary.get("bias", {})
        if "direct_bias" in b:
            click.echo(f"direct bias       {b['direct_bias']:.3f} over {b['n_professions']} professions "
                       f"(after hard-debias {b['direct_bias_after']:.3f})")
        if report:
            click.echo(f"report            {report}")


def _write_report(path, summary, arrays, plots_dir=None) -> None:
    from embedkit.report import plot_barcode, plot_bias_projections, plot_length_collapse, plot_spectrum, write_html_report

    with tempfile.TemporaryDirectory() as tmp:
        d = plots_dir or tmp
        Path(d).mkdir(parents=True, exist_ok=True)
        imgs, caps = {}, {}
        imgs["spectrum"] = plot_spectrum(arrays["singular_values"], Path(d) / "spectrum.png", rankme=summary["rankme"])
        caps["spectrum"] = "Singular values of the embedding matrix; RankMe = exp(entropy of the normalised spectrum)."
        imgs["barcode"] = plot_barcode(arrays["persistence"], Path(d) / "barcode.png")
        caps["barcode"] = "H0 persistence (minimum-spanning-tree edge lengths of L2-normalised embeddings)."
        lc = summary.get("length_collapse", {})
        if "buckets" in lc:
            imgs["length"] = plot_length_collapse(lc["buckets"], Path(d) / "length.png")
            caps["length"] = "Mean pairwise cosine and RankMe per length bucket; rising cosine with length = collapse."
        b = summary.get("bias", {})
        if "projections" in b:
            imgs["bias"] = plot_bias_projections(b["projections"], Path(d) / "bias.png", after=b["projections_after"])
            caps["bias"] = "Projection of profession words on the gender direction, before and after hard-debias."
        rows = {"texts": summary["n_texts"], "dimension": summary["dim"], "RankMe": summary["rankme"],
                "PH separability": summary["separability"]["separability"]}
        if "fisher_ratio" in summary:
            rows["Fisher ratio (labels)"] = summary["fisher_ratio"]
        if "collapse" in lc:
            rows["length collapse"] = lc["collapse"]
        if "direct_bias" in b:
            rows["direct gender bias (professions)"] = b["direct_bias"]
        slim = {k: v for k, v in summary.items() if k != "bias"}
        if b:
            slim["bias"] = {k: v for k, v in b.items() if not k.startswith("projections")}
        if path:
            write_html_report(path, slim, imgs, captions=caps, rows=rows, title=f"embedkit diagnose: {summary['model']}")


def _parse_top(value: str) -> float:
    v = value.strip()
    try:
        if v.endswith("%"):
            f = float(v[:-1]) / 100
            if not 0 < f < 1:
                raise ValueError
            return f
        n = int(v)
        if n <= 0:
            raise ValueError
        return n
    except ValueError:
        raise click.BadParameter(f"{value!r}: use a percentage like 5% or a positive count like 20", param_hint="--top")


@diagnose.command("ches", context_settings=CTX)
@click.option("--model", "model_path", required=True, help="A transformers causal LM (local folder or hub name).")
@click.option("--pairs", required=True, type=click.Path(dir_okay=False), help="JSONL: {prompt, chosen, rejected} per line.")
@click.option("--top", default="5%", show_default=True, help="How many to list: a percentage (5%) or a count (20).")
@click.option("--score", type=click.Choice(["normalized", "raw"]), default="normalized", show_default=True,
              help="Rank by length-normalised CHES (as for filtering in the paper) or raw CHES.")
@click.option("--filter-out", type=click.Path(dir_okay=False), default=None,
              help="Write the pairs WITHOUT the top ones to this JSONL (the paper's data filtering).")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--max-length", type=int, default=None, help="Truncate prompt+response to this many tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def ches(model_path, pairs, top, score, filter_out, batch_size, max_length, as_json):
    """Score preference pairs by CHES (likelihood-displacement risk in DPO) and list/filter the top ones.

    \b
    Example:
      embedkit diagnose ches --model ./my-lm --pairs prefs.jsonl --top 5%
      embedkit diagnose ches --model ./my-lm --pairs prefs.jsonl --top 5% --filter-out kept.jsonl
    """
    from embedkit._io import atomic_write_bytes
    from embedkit.analysis.ches import ches_scores, read_preference_pairs, top_ches

    k = _parse_top(top)
    items = read_preference_pairs(pairs)
    model, tok = _load_causal_lm(model_path)
    click.echo(f"scoring {len(items)} pairs ...", err=True)
    s = ches_scores(model, tok, items, batch_size=batch_size, max_length=max_length)
    key = "ches_normalized" if score == "normalized" else "ches"
    idx = top_ches(s[key], k)
    rows = [{"index": int(i), "ches": float(s["ches"][i]), "ches_normalized": float(s["ches_normalized"][i]),
             "prompt": items[i].prompt, "chosen": items[i].chosen, "rejected": items[i].rejected} for i in idx]
    if filter_out:
        drop = set(int(i) for i in idx)
        kept = [json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) for i, p in enumerate(items)
                if i not in drop]
        atomic_write_bytes(filter_out, ("\n".join(kept) + ("\n" if kept else "")).encode())
        click.echo(f"wrote {len(kept)} of {len(items)} pairs to {filter_out}", err=True)
    if as_json:
        _echo_json({"n_pairs": len(items), "ranked_by": key, "top": rows})
        return
    click.echo(f"{'#':>5}  {'CHES':>10}  {'CHES/len':>10}  prompt")
    for r in rows:
        click.echo(f"{r['index']:>5}  {r['ches']:>10.3f}  {r['ches_normalized']:>10.3f}  {r['prompt'][:60]!r}")


@diagnose.command("tempscale", context_settings=CTX)
@click.option("--model", "model_name", default=None, help="Sentence-transformers folder or hub name; default all-MiniLM-L6-v2.")
@click.option("--texts", required=True, type=click.Path(dir_okay=False), help="Unlabelled texts of varied length, one per line.")
@click.option("--taus", default="0.7,0.8,0.9,0.95,1.05,1.1", show_default=True, help="Candidate temperatures (1 is always included).")
@click.option("--min-agreement", type=float, default=0.9, show_default=True,
              help="Keep only taus whose embeddings have mean cosine >= this to the untouched model's.")
@click.option("--max-texts", type=int, default=300, show_default=True, help="Use the first N texts (each tau re-encodes them).")
@click.option("--tau", "force_tau", type=float, default=None, help="Skip the search and use this temperature.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Save the repaired model folder here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def tempscale(model_name, texts, taus, min_agreement, max_texts, force_tau, out, as_json):
    """Search a TempScale temperature on unlabelled texts (length collapse), and save the repaired model.

    \b
    Example:
      embedkit diagnose tempscale --texts long_docs.txt
      embedkit diagnose tempscale --texts long_docs.txt --tau 0.9 --out minilm-tau0.9
    """
    from embedkit.analysis.length_collapse import search_temperature
    from embedkit.data import read_text_lines
    from embedkit.models.loading import load_encoder
    from embedkit.models.tempscale import apply_tempscale, save_tempscaled

    try:
        cand = [float(t) for t in taus.split(",") if t.strip()]
    except ValueError:
        raise click.BadParameter(f"{taus!r}: a comma-separated list of numbers", param_hint="--taus")
    model = load_encoder(model_name)
    result = {}
    if force_tau is None:
        lines = read_text_lines(texts)[:max_texts]
        if len(lines) < 10:
            raise EmbedkitError(f"{texts}: {len(lines)} text(s); at least 10 of varied length are needed for a tau search")
        result = search_temperature(model, lines, taus=cand, min_agreement=min_agreement, show_progress=True)
        tau = result["best_tau"]
    else:
        tau = force_tau
    result["tau"] = tau
    if out:
        apply_tempscale(model, tau)
        save_tempscaled(model, out)
        result["out"] = str(out)
    if as_json:
        _echo_json(result)
        return
    if "results" in result:
        click.echo(f"{'tau':>6}  {'long mean cos':>13}  {'collapse':>9}  {'RankMe':>7}  {'agreement':>9}")
        for r in result["results"]:
            click.echo(f"{r['tau']:>6.3g}  {r['long_mean_cosine']:>13.4f}  {r['collapse']:>+9.4f}  {r['rankme']:>7.1f}  "
                       f"{r['agreement']:>9.4f}")
    click.echo(f"tau = {tau}" + (f"; saved to {out}" if out else ""))


def _load_causal_lm(path):
    from embedkit.models.loading import _is_offline

    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:  # pragma: no cover
        raise EmbedkitError("transformers is required for CHES") from e
    p = Path(path).expanduser()
    local = p.exists()
    if not local and (_is_offline() or str(path).startswith((".", "/", "~"))):
        raise EmbedkitError(f"model {path!r}: not a local folder (and the hub is offline or this looks like a path)")
    try:
        tok = AutoTokenizer.from_pretrained(str(p if local else path))
        model = AutoModelForCausalLM.from_pretrained(str(p if local else path))
    except (OSError, ValueError) as e:
        raise EmbedkitError(f"model {path!r}: could not load a causal LM and its tokenizer ({type(e).__name__}: {e})") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok
