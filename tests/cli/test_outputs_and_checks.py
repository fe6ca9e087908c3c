"""Issue 12 item 1 (nothing the user had is replaced), cheap checks before any model loads, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from embedkit.cli.main import run_guarded


@pytest.fixture()
def files(tmp_path):
    corpus = tmp_path / "docs.txt"
    corpus.write_text("the cat and the kitten\nstock price and market rate\npython code has a bug\nthe dog and the puppy\n")
    kw = tmp_path / "kw.tsv"
    kw.write_text("animal\tcat dog\nfinance\tstock bank\n")
    labelled = tmp_path / "lab.tsv"
    labelled.write_text("label\ttext\nanimal\tthe cat\nfinance\tstock price\n")
    sts = tmp_path / "sts.tsv"
    sts.write_text("score\tsentence1\tsentence2\n1.0\ta cat\ta dog\n2.0\tstock\tbank\n")
    return {"C": corpus, "K": kw, "L": labelled, "S": sts}


# every command that writes a folder, with {out} where the folder goes
FOLDER_COMMANDS = {
    "index build": ["index", "build", "--corpus", "{C}", "--out", "{out}"],
    "encode": ["encode", "--corpus", "{C}", "--out", "{out}"],
    "lbl2vec fit": ["lbl2vec", "fit", "--corpus", "{L}", "--keywords", "{K}", "--out", "{out}"],
    "eval local": ["eval", "local", "--sts", "{S}", "--out", "{out}"],
    "diagnose tempscale": ["diagnose", "tempscale", "--corpus", "{C}", "--tau", "0.9", "--out", "{out}"],
    "demo": ["demo", "--out", "{out}"],
    "diagnose --plots": ["diagnose", "--corpus", "{C}", "--plots", "{out}"],
}


def _args(template, files, out):
    return [a.format(out=out, **files) for a in template]


@pytest.mark.parametrize("name", sorted(FOLDER_COMMANDS))
def test_a_folder_embedkit_did_not_write_is_refused_and_kept(name, files, tmp_path, invoke, no_model):
    d = tmp_path / "d"
    d.mkdir()
    (d / "thesis.txt").write_text("x")
    res = invoke(*_args(FOLDER_COMMANDS[name], files, d))
    res.one_line_error("not empty and not an embedkit")
    assert sorted(p.name for p in d.iterdir()) == ["thesis.txt"] and (d / "thesis.txt").read_text() == "x"


@pytest.mark.parametrize("name", sorted(FOLDER_COMMANDS))
def test_an_existing_file_as_out_is_refused_not_renamed(name, files, tmp_path, invoke, no_model):
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    before = sorted(p.name for p in tmp_path.iterdir())
    res = invoke(*_args(FOLDER_COMMANDS[name], files, f))
    res.one_line_error("not a folder")
    assert f.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("name", sorted(FOLDER_COMMANDS))
def test_out_dot_is_refused(name, files, tmp_path, invoke, no_model, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_text("x")
    monkeypatch.chdir(work)
    res = invoke(*_args(FOLDER_COMMANDS[name], files, "."))
    res.one_line_error("is the current folder")
    assert sorted(p.name for p in work.iterdir()) == ["mine.txt"]


@pytest.mark.parametrize("name", ["index build", "encode", "lbl2vec fit", "diagnose tempscale"])
def test_the_input_is_never_the_output(name, files, tmp_path, invoke, no_model):
    key = "L" if name == "lbl2vec fit" else "C"
    before = files[key].read_bytes()
    res = invoke(*_args(FOLDER_COMMANDS[name], files, files[key]))
    res.one_line_error("would overwrite the input")
    assert files[key].read_bytes() == before


def test_beir_folder_as_corpus_and_out(tmp_path, invoke, no_model):
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text('{"_id": "1", "text": "a cat"}\n')
    res = invoke("index", "build", "--corpus", beir, "--out", beir)
    res.one_line_error("would overwrite the input")
    res = invoke("index", "build", "--corpus", beir, "--out", beir / "inside")
    res.one_line_error("would overwrite the input")
    assert sorted(p.name for p in beir.iterdir()) == ["corpus.jsonl"]


def test_overwrite_replaces_only_an_earlier_output_of_the_same_kind(files, tmp_path, invoke, tiny_model_path,
                                                                    isolated_cache):
    out = tmp_path / "ix"
    assert invoke("index", "build", "-m", tiny_model_path, "--corpus", files["C"], "--out", out, "-q").code == 0
    res = invoke("index", "build", "-m", tiny_model_path, "--corpus", files["C"], "--out", out)
    res.one_line_error("already holds an embedkit index; pass --overwrite")
    res = invoke("index", "build", "-m", tiny_model_path, "--corpus", files["C"], "--out", out, "--overwrite", "--json")
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["documents"] == 4
    # an index is not an eval output: --overwrite does not make eval replace it
    res = invoke("eval", "local", "--sts", files["S"], "--out", out, "--overwrite")
    res.one_line_error("an embedkit index, not a eval")


def test_diagnose_and_debias_do_not_replace_a_file(files, tmp_path, invoke, no_model):
    f = tmp_path / "report.html"
    f.write_text("<html>mine</html>")
    for overwrite in ([], ["--overwrite"]):  # --overwrite is not offered, and does not help
        invoke("diagnose", "--corpus", files["C"], "--out", f, *overwrite).one_line_error("not written by embedkit")
        invoke("debias", "--out", f, *overwrite).one_line_error("not written by embedkit")
    assert f.read_text() == "<html>mine</html>"


# --- issue 24: single-file outputs, outputs inside inputs, foreign files inside output folders ------

def _beir(folder):
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "the cat"}\n{"_id": "d2", "text": "stock price"}\n'
                                         '{"_id": "d3", "text": "python code"}\n{"_id": "d4", "text": "the dog"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "cat"}\n{"_id": "q2", "text": "bank"}\n')
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    return folder


@pytest.mark.parametrize("command", [
    ["mine", "--pairs", "{B}", "-c", "{B}", "-o", "{out}"],
    ["debias", "--vectors", "{W}", "-o", "{out}"],
    ["diagnose", "-c", "{C}", "-o", "{out}"],
])
def test_overwrite_never_replaces_a_file_embedkit_did_not_write(command, files, tmp_path, invoke, no_model):
    beir = _beir(tmp_path / "beir")
    w2v = tmp_path / "w.txt"
    w2v.write_text("2 2\nhe 1 0\nshe 0 1\n")
    out = tmp_path / "results.tsv"
    out.write_text("my own results\n")
    args = [a.format(B=beir, W=w2v, C=files["C"], out=out) for a in command]
    res = invoke(*args, "--overwrite")
    assert res.one_line_error("not written by embedkit") == (
        f"error: --out {str(out)!r} exists and was not written by embedkit (or was changed since); embedkit will "
        "not replace it — name a new file")
    # a copied record beside it does not help: the record holds the content's sha256
    (tmp_path / ".results.tsv.embedkit-output.json").write_text(
        json.dumps({"kind": "triplets", "bytes": 15, "sha256": "0" * 64}))
    invoke(*args, "--overwrite").one_line_error("not written by embedkit")
    assert out.read_text() == "my own results\n"


@pytest.mark.parametrize("out, option", [("beir/corpus.jsonl", "-c"), ("beir/qrels/train.tsv", "--pairs"),
                                         ("beir", "-c"), ("beir/new.tsv", "-c")])
def test_mine_output_inside_an_input_folder_is_refused(out, option, tmp_path, invoke, no_model):
    beir = _beir(tmp_path / "beir")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("cat\td1\n")
    before = {p: p.read_bytes() for p in beir.rglob("*") if p.is_file()}
    args = ["--pairs", beir, "-c", tmp_path / "beir"] if option == "--pairs" else ["--pairs", pairs, "-c", beir]
    res = invoke("mine", *args, "-o", tmp_path / out, "--overwrite")
    res.one_line_error("would overwrite the input")
    assert {p: p.read_bytes() for p in beir.rglob("*") if p.is_file()} == before


def test_debias_output_inside_the_lists_folder_is_refused(tmp_path, data_dir, invoke, no_model):
    import shutil

    lists = shutil.copytree(data_dir / "debias", tmp_path / "lists")
    w2v = tmp_path / "w.txt"
    w2v.write_text("2 2\nhe 1 0\nshe 0 1\n")
    before = (lists / "professions.json").read_bytes()
    res = invoke("debias", "--vectors", w2v, "--lists", lists, "-o", lists / "professions.json", "--overwrite")
    res.one_line_error("would overwrite the input")
    assert (lists / "professions.json").read_bytes() == before


def test_mine_replaces_its_own_earlier_output_only(tmp_path, invoke, tiny_model_path, isolated_cache):
    beir = _beir(tmp_path / "beir")
    out = tmp_path / "t.tsv"
    args = ["mine", "-m", tiny_model_path, "--pairs", beir, "-c", beir, "--negatives", "1", "-o", out, "-q"]
    assert invoke(*args).code == 0
    first = out.read_text()
    assert first.count("\n") == 2
    invoke(*args).one_line_error("already exists; pass --overwrite")
    assert invoke(*args, "--overwrite").code == 0 and out.read_text() == first
    out.write_text(first + "my note\n")  # changed since embedkit wrote it: not embedkit's any more
    invoke(*args, "--overwrite").one_line_error("was changed since")
    assert out.read_text().endswith("my note\n")


def test_index_overwrite_keeps_a_users_file_inside_the_folder(files, tmp_path, invoke, tiny_model_path,
                                                              isolated_cache):
    out = tmp_path / "ix"
    build = ["index", "build", "-m", tiny_model_path, "--corpus", files["C"], "--out", out, "-q"]
    assert invoke(*build).code == 0
    marker = json.loads((out / "embedkit-output.json").read_text())
    assert "manifest.json" in marker["files"] and "docs.sqlite" in marker["files"]  # written after mark_output
    assert invoke(*build, "--overwrite").code == 0  # only embedkit's files: replaced
    (out / "notes.txt").write_text("my notes")
    res = invoke(*build, "--overwrite")
    assert res.one_line_error("notes.txt") == (
        f"error: --out {str(out)!r} holds a file embedkit did not write (notes.txt); embedkit will not replace it "
        "— move them out or name a new folder")
    assert (out / "notes.txt").read_text() == "my notes"


def test_a_copied_marker_does_not_make_a_folder_embedkits(files, tmp_path, invoke, no_model):
    d = tmp_path / "thesis"
    d.mkdir()
    (d / "thesis.txt").write_text("years of work")
    (d / "sub").mkdir()
    (d / "sub" / "fig.png").write_bytes(b"png")
    for kind, args in [("index", ["index", "build", "-c", files["C"]]),
                       ("model", ["diagnose", "tempscale", "-c", files["C"], "--tau", "0.9"])]:
        # an old-style marker (no file list) and no index manifest: nothing says what is embedkit's
        (d / "embedkit-output.json").write_text(json.dumps({"kind": kind, "embedkit": "0.1"}))
        invoke(*args, "-o", d, "--overwrite").one_line_error("did not record which files it wrote")
        (d / "embedkit-output.json").write_text(json.dumps({"kind": kind, "embedkit": "0.2", "files": ["sub"]}))
        invoke(*args, "-o", d, "--overwrite").one_line_error("holds 2 entries embedkit did not write (sub/fig.png, "
                                                             "thesis.txt)")
    assert (d / "thesis.txt").read_text() == "years of work" and (d / "sub" / "fig.png").read_bytes() == b"png"


# --- cheap checks first ---------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["index", "build", "--corpus", "{C}", "--out", "{out}", "--spec", "int9"],
    ["demo", "--spec", "int9"],
])
def test_bad_spec_fails_before_any_model_loads(args, files, tmp_path, invoke, no_model):
    t = time.perf_counter()
    res = invoke(*_args(args, files, tmp_path / "o"))
    assert time.perf_counter() - t < 1.0
    res.one_line_error("unknown compression stage 'int9'")


@pytest.mark.parametrize("args, fragment", [
    (["index", "build", "--corpus", "{C}", "--out", "{out}", "--batch-size", "0"], "'--batch-size': 0 is not in the range"),
    (["index", "build", "--corpus", "{C}", "--out", "{out}", "--rescore", "0"], "'--rescore': 0 is not in the range"),
    (["index", "build", "--corpus", "{C}", "--out", "{out}", "--nlist", "0"], "'--nlist': 0 is not in the range"),
    (["index", "build", "--corpus", "{C}", "--out", "{out}/o", "--index-type", "ivf", "--nlist", "1000"],
     "--nlist 1000 is more than the 4 documents"),
    (["index", "build", "--corpus", "{out}/missing.txt", "--out", "{out}"], "file not found"),
    (["index", "build", "--corpus", "{C}", "--out", "{out}/o", "-m", "/nonexistent/model"], "does not exist"),
    (["index", "search", "{out}/none", "hello", "-k", "0"], "'-k': 0 is not in the range"),
    (["demo", "--limit", "-5"], "'--limit': -5 is not in the range"),
    (["diagnose", "--corpus", "{C}", "--max-texts", "-3"], "'--limit': -3 is not in the range"),
    (["diagnose", "--corpus", "{C}", "--temperature", "nan"], "not a finite number"),
    (["diagnose", "tempscale", "--corpus", "{C}", "--taus", "0.9,inf"], "--taus"),
    (["encode", "--corpus", "{C}", "--out", "{C}"], "would overwrite the input"),
    (["encode", "--corpus", "{C}", "--out", "{S}"], "exists and is not a folder"),
    (["encode", "--corpus", "{C}", "--out", "{out}", "--shard-size", "0"], "'--shard-size': 0 is not in the range"),
    (["eval", "local", "--sts", "{S}", "--limit", "0"], "'--limit': 0 is not in the range"),
    (["lbl2vec", "fit", "--corpus", "{L}", "--keywords", "{K}", "--out", "{out}", "--similarity-threshold", "2"],
     "2 must be <= 1"),
    (["debias", "--vectors", "{out}/none.txt", "--out", "{out}/x.txt"], "file not found"),
])
def test_bad_arguments_are_one_line_before_any_model_loads(args, fragment, files, tmp_path, invoke, no_model):
    invoke(*_args(args, files, tmp_path)).one_line_error(fragment)


def test_corrupt_manifest_in_encode_out_is_one_line(files, tmp_path, invoke, tiny_model_path, isolated_cache):
    out = tmp_path / "emb"
    out.mkdir()
    (out / "manifest.json").write_text("{not json")
    invoke("encode", "-m", tiny_model_path, "--corpus", files["C"], "--out", out, "-q").one_line_error("manifest")
    assert (out / "manifest.json").read_text() == "{not json"


def test_library_errors_and_bad_gzip_are_one_line(tmp_path, invoke, no_model):
    import gzip

    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(b"not gzip at all")
    invoke("index", "build", "--corpus", bad, "--out", tmp_path / "o").one_line_error("bad.txt.gz")
    good = gzip.compress(b"a cat\n" * 1000)
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(good[: len(good) // 2])
    res = invoke("index", "build", "--corpus", cut, "--out", tmp_path / "o")
    res.one_line_error("cut.txt.gz")  # exit 2, not the 130 of Ctrl-C


def test_eof_and_interrupt_exit_codes(files, tmp_path, invoke, monkeypatch):
    def eof(*a, **k):
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")

    monkeypatch.setattr("embedkit.data.read_corpus", eof)
    res = invoke("index", "build", "--corpus", files["C"], "--out", tmp_path / "o")
    res.one_line_error("ended unexpectedly")

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("embedkit.data.read_corpus", interrupt)
    res = invoke("index", "build", "--corpus", files["C"], "--out", tmp_path / "o")
    assert res.code == 130 and "aborted" in res.stderr
    assert run_guarded(interrupt) == 130
    assert run_guarded(eof) == 2


@pytest.mark.parametrize("args, fragment", [
    (["demo", "--spec", "int9"], "unknown compression stage"),
    (["encode", "--corpus", "{C}", "--out", "{C}"], "would overwrite the input"),
    (["eval", "local", "--sts", "{S}", "--specs", "float;int9"], "unknown compression stage"),
    (["diagnose", "--corpus", "{C}", "--max-texts", "-3"], "is not in the range"),
    (["debias", "--vectors", "{C}", "--model", "x", "--out", "{out}/o.txt"], "not both"),
])
def test_console_exit_status(args, fragment, files, tmp_path):
    """One real process per command (the others are in test_index_cli, test_lbl2vec_cli, test_train_cli)."""
    r = subprocess.run([sys.executable, "-m", "embedkit.cli.main", *_args(args, files, tmp_path)],
                       capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and fragment in lines[0], r.stderr
