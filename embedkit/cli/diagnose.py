"""``embedkit diagnose``: label-free embedding diagnostics with an HTML report; ``diagnose ches|tempscale``."""

from __future__ import annotations

import json

import click

from embedkit.cli._common import (
    CTX,
    POSITIVE,
    POSITIVE_FLOAT,
    FiniteFloat,
    batch_size_option,
    check_input,
    check_model,
    command,
    common_options,
    corpus_option,
    info,
    json_option,
    limit_option,
    load_model,
    model_option,
    option,
    prepare_output,
    prepare_output_file,
    print_json,
    show_progress,
)
from embedkit.errors import EmbedkitError


@click.group(invoke_without_command=True, context_settings=CTX)
@common_options
@model_option
@corpus_option(required=False, aliases=("--texts",),
               help="Texts to diagnose: a text file with one text per line (.gz ok), a corpus.jsonl[.gz] or a BEIR folder.")
@click.option("--labels", default=None, metavar="FILE",
              help="Optional: one label per line, one per text of --corpus (adds the Fisher ratio).")
@option("--out", "-o", "out", aliases=("--report",), default=None, metavar="FILE.html",
        help="Write a self-contained HTML report to this new file.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier embedkit report at --out / --plots.")
@click.option("--plots", "plots_dir", default=None, metavar="DIR", help="Also save the report's PNG plots in this new folder.")
@json_option
@click.option("--temperature", type=POSITIVE_FLOAT, default=None, help="Apply TempScale with this tau before diagnosing.")
@limit_option(default=5000)
@click.option("--bias/--no-bias", default=True, show_default=True,
              help="Gender-bias projections of the model's word vectors (needs the debias word lists).")
@click.option("--bias-lists", default=None, metavar="DIR", help="Folder with the debiaswe JSON lists; default <data>/debias.")
@click.pass_context
def diagnose(ctx, model, device, corpus, labels, out, overwrite, plots_dir, as_json, temperature, limit, bias, bias_lists):
    """Diagnose an embedding model on your texts: RankMe, label-free separability, length collapse, bias.

    Python: ``embedkit.analysis.diagnose.diagnose_texts(model, texts)`` and
    ``embedkit.report.write_diagnose_report(path, summary, arrays)``.

    \b
    Example:
      embedkit diagnose --corpus docs.txt --out report.html
      embedkit diagnose -m ./my-model --corpus docs.txt --labels labels.txt --json
      embedkit diagnose ches -m ./my-lm --pairs prefs.jsonl --top 5%
      embedkit diagnose tempscale --corpus long_docs.txt --out repaired-model
    """
    if ctx.invoked_subcommand is not None:
        return
    if not corpus:
        raise click.UsageError("--corpus is required (or use a subcommand, e.g. `embedkit diagnose ches`)")
    from embedkit.analysis.diagnose import diagnose_texts
    from embedkit.data import read_corpus, read_text_lines
    from embedkit.report import is_embedkit_report, write_diagnose_report

    # cheap checks first
    check_input(corpus, "--corpus")
    check_input(labels, "--labels", kind="file")
    check_input(bias_lists, "--bias-lists", kind="dir")
    inputs = [corpus, labels]
    if out is not None:
        prepare_output_file(out, kind="report", overwrite=overwrite, inputs=inputs, is_ours=is_embedkit_report)
    plots = prepare_output(plots_dir, "report", overwrite=overwrite, inputs=inputs, option_name="--plots") \
        if plots_dir is not None else None
    check_model(model)
    _, all_texts, _ = read_corpus(corpus)
    lines = all_texts[:limit]
    labs = None
    if labels:
        labs = read_text_lines(labels)
        if len(labs) != len(all_texts):
            raise EmbedkitError(f"{labels}: {len(labs)} labels for {len(all_texts)} texts in {corpus}; counts must match")
        labs = labs[:limit]
    if len(lines) < 3:
        raise EmbedkitError(f"{corpus}: {len(lines)} text(s); at least 3 are needed")
    enc = load_model(model, device, temperature=temperature)
    summary = diagnose_texts(enc, lines, labels=labs, bias=bias, bias_lists=bias_lists, show_progress=show_progress())
    summary["model"] = str(model or "all-MiniLM-L6-v2")
    summary["temperature"] = temperature or 1.0
    arrays = summary.pop("_arrays")
    if out is not None or plots is not None:
        from embedkit._io import mark_output, mark_output_file

        if plots is not None:
            plots.mkdir(parents=True, exist_ok=True)
            mark_output(plots, "report", patterns=("*.png",))  # an interrupted run stays replaceable
        written = write_diagnose_report(out, summary, arrays, plots_dir=plots)
        if plots is not None:
            mark_output(plots, "report")  # again: now it lists the plots
        if out is not None:
            mark_output_file(out, "report")
            summary["report"] = written["report"]
    if as_json:
        print_json(summary)
        return
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
    elif "skipped" in b:
        info(f"bias skipped: {b['skipped']}")
    if out is not None:
        click.echo(f"report            {out}")


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
        raise click.BadParameter(f"{value!r}: use a percentage like 5% or a positive count like 20", param_hint="--top") from None


@command(diagnose, "ches")
@model_option(required=True, help="A transformers causal LM (local folder or hub name).")
@click.option("--pairs", required=True, metavar="FILE", help="JSONL: {prompt, chosen, rejected} per line (.gz ok).")
@click.option("--top", default="5%", show_default=True, help="How many to list: a percentage (5%) or a count (20).")
@click.option("--score", type=click.Choice(["normalized", "raw"]), default="normalized", show_default=True,
              help="Rank by length-normalised CHES (as for filtering in the paper) or raw CHES.")
@click.option("--filter-out", default=None, metavar="FILE",
              help="Write the pairs WITHOUT the top ones to this new JSONL file (the paper's data filtering).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --filter-out file.")
@batch_size_option(default=8)
@click.option("--max-length", type=POSITIVE, default=None, help="Truncate prompt+response to this many tokens.")
@json_option
def ches(model, device, pairs, top, score, filter_out, overwrite, batch_size, max_length, as_json):
    """Score preference pairs by CHES (likelihood-displacement risk in DPO) and list/filter the top ones.

    \b
    Example:
      embedkit diagnose ches -m ./my-lm --pairs prefs.jsonl --top 5%
      embedkit diagnose ches -m ./my-lm --pairs prefs.jsonl --top 5% --filter-out kept.jsonl
    """
    from embedkit._io import atomic_write_bytes, mark_output_file
    from embedkit.analysis.ches import ches_scores, top_ches
    from embedkit.data import read_preference_pairs
    from embedkit.models.loading import load_causal_lm

    k = _parse_top(top)
    check_input(pairs, "--pairs", kind="file")
    if filter_out is not None:
        prepare_output_file(filter_out, kind="pairs", overwrite=overwrite, inputs=[pairs], option_name="--filter-out")
    items = read_preference_pairs(pairs)
    lm, tok = load_causal_lm(model, **({"device": device} if device else {}))
    info(f"scoring {len(items)} pairs ...")
    s = ches_scores(lm, tok, items, batch_size=batch_size, max_length=max_length)
    key = "ches_normalized" if score == "normalized" else "ches"
    idx = top_ches(s[key], k)
    rows = [{"index": int(i), "ches": float(s["ches"][i]), "ches_normalized": float(s["ches_normalized"][i]),
             "prompt": items[i].prompt, "chosen": items[i].chosen, "rejected": items[i].rejected} for i in idx]
    if filter_out:
        drop = set(int(i) for i in idx)
        kept = [json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) for i, p in enumerate(items)
                if i not in drop]
        atomic_write_bytes(filter_out, ("\n".join(kept) + ("\n" if kept else "")).encode())
        mark_output_file(filter_out, "pairs")
        info(f"wrote {len(kept)} of {len(items)} pairs to {filter_out}")
    if as_json:
        print_json({"n_pairs": len(items), "ranked_by": key, "top": rows})
        return
    click.echo(f"{'#':>5}  {'CHES':>10}  {'CHES/len':>10}  prompt")
    for r in rows:
        click.echo(f"{r['index']:>5}  {r['ches']:>10.3f}  {r['ches_normalized']:>10.3f}  {r['prompt'][:60]!r}")


@command(diagnose, "tempscale")
@model_option
@corpus_option(aliases=("--texts",), help="Unlabelled texts of varied length: a text file with one text per line, "
               "a corpus.jsonl[.gz] or a BEIR folder.")
@click.option("--taus", default="0.7,0.8,0.9,0.95,1.05,1.1", show_default=True, help="Candidate temperatures (1 is always included).")
@click.option("--min-agreement", type=FiniteFloat(-1.0, 1.0), default=0.9, show_default=True,
              help="Keep only taus whose embeddings have mean cosine >= this to the untouched model's.")
@limit_option(default=300, help="Use the first N texts (each tau re-encodes them).")
@click.option("--tau", "force_tau", type=POSITIVE_FLOAT, default=None, help="Skip the search and use this temperature.")
@option("--out", "-o", "out", default=None, metavar="DIR", help="Save the repaired model in this new folder.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier embedkit model at --out.")
@json_option
def tempscale(model, device, corpus, taus, min_agreement, limit, force_tau, out, overwrite, as_json):
    """Search a TempScale temperature on unlabelled texts (length collapse), and save the repaired model.

    \b
    Example:
      embedkit diagnose tempscale --corpus long_docs.txt
      embedkit diagnose tempscale --corpus long_docs.txt --tau 0.9 --out minilm-tau0.9
    """
    import math

    from embedkit.analysis.length_collapse import search_temperature
    from embedkit.data import read_corpus
    from embedkit.models.tempscale import apply_tempscale, save_tempscaled

    try:
        cand = [float(t) for t in taus.split(",") if t.strip()]
    except ValueError:
        raise click.BadParameter(f"{taus!r}: a comma-separated list of numbers", param_hint="--taus") from None
    if not cand or not all(math.isfinite(t) and t > 0 for t in cand):
        raise click.BadParameter(f"{taus!r}: a comma-separated list of positive numbers", param_hint="--taus")
    check_input(corpus, "--corpus")
    target = prepare_output(out, "model", overwrite=overwrite, inputs=[corpus]) if out is not None else None
    check_model(model)
    lines = None
    if force_tau is None:
        lines = read_corpus(corpus).texts[:limit]
        if len(lines) < 10:
            raise EmbedkitError(f"{corpus}: {len(lines)} text(s); at least 10 of varied length are needed for a tau search")
    enc = load_model(model, device)
    result = {}
    if force_tau is None:
        result = search_temperature(enc, lines, taus=cand, min_agreement=min_agreement, show_progress=show_progress())
        tau = result["best_tau"]
    else:
        tau = force_tau
    result["tau"] = tau
    nothing = force_tau is None and not result.get("repair", False)
    if target is not None and not nothing:
        apply_tempscale(enc, tau)
        save_tempscaled(enc, target)
        result["out"] = str(out)
    if as_json:
        print_json(result)
        return
    if "results" in result:
        click.echo(f"{'tau':>6}  {'long mean cos':>13}  {'collapse':>9}  {'RankMe':>7}  {'agreement':>9}")
        for r in result["results"]:
            click.echo(f"{r['tau']:>6.3g}  {r['long_mean_cosine']:>13.4f}  {r['collapse']:>+9.4f}  {r['rankme']:>7.1f}  "
                       f"{r['agreement']:>9.4f}")
    if nothing:
        click.echo(f"{result['reason']}; no model written" if out else result["reason"])
        return
    click.echo(f"tau = {tau}" + (f"; saved to {out}" if out else ""))
