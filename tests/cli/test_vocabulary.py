"""One command-line vocabulary: the same option means the same thing in every command (issue 11 item 7)."""

from __future__ import annotations

import json
import logging
import warnings

import click
import pytest

from embedkit.cli._common import configure_logging, logging_state, print_json, to_json
from embedkit.cli.main import cli


def _leaves(group=cli, path=()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from _leaves(cmd, path + (name,))
            if getattr(cmd, "invoke_without_command", False):
                yield path + (name,), cmd
        else:
            yield path + (name,), cmd


LEAVES = dict(_leaves())
# commands that load a sentence encoder or a language model
LOADS_A_MODEL = {("demo",), ("encode",), ("index", "build"), ("index", "add"), ("index", "search"), ("index", "eval"),
                 ("eval", "local"), ("eval", "mteb"), ("diagnose",), ("diagnose", "ches"), ("diagnose", "tempscale"),
                 ("debias",), ("lbl2vec", "fit"), ("lbl2vec", "predict")}


def _opts(cmd):
    return {o: p for p in cmd.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}


def test_every_leaf_command_is_listed():
    assert set(LEAVES) >= LOADS_A_MODEL | {("index", "remove"), ("lbl2vec", "search"), ("train",)}


@pytest.mark.parametrize("path", sorted(LEAVES), ids=" ".join)
def test_help_has_an_example_and_the_shared_options(path, invoke):
    res = invoke(*path, "--help")
    assert res.code == 0, res.stderr
    assert "Example" in res.stdout and f"embedkit {' '.join(path)}" in res.stdout
    opts = _opts(LEAVES[path])
    assert opts["-q"].name == "quiet" and opts["--quiet"].name == "quiet"
    assert opts["-v"].name == "verbose"
    for hidden in ("--output", "--report", "--texts", "--input", "--docs", "--encoder", "--max-texts"):
        assert hidden not in res.stdout  # old spellings work but are not advertised


@pytest.mark.parametrize("path", sorted(LOADS_A_MODEL), ids=" ".join)
def test_model_and_device_wherever_a_model_loads(path):
    opts = _opts(LEAVES[path])
    assert opts["-m"].name == "model" and opts["--model"].name == "model" and "--device" in opts


def test_no_short_flag_has_two_meanings():
    meaning: dict[str, set] = {}
    for cmd in LEAVES.values():
        for p in cmd.params:
            if isinstance(p, click.Option):
                for o in p.opts:
                    if not o.startswith("--"):
                        meaning.setdefault(o, set()).add(p.name)
    # -s: one compression spec (--spec) where one index is built, several (--specs) where several are scored
    assert meaning.pop("-s") == {"spec", "specs"}
    assert {o: names for o, names in meaning.items() if len(names) > 1} == {}
    assert meaning["-k"] == {"k"} and meaning["-q"] == {"quiet"} and meaning["-o"] == {"out"}
    assert meaning["-c"] == {"corpus"} and meaning["-m"] == {"model"}


def test_one_output_and_one_input_spelling():
    for path, cmd in LEAVES.items():
        opts = _opts(cmd)
        if "--output" in opts or "--report" in opts:
            assert (opts.get("--output") or opts.get("--report")).name == "out", path
        for old in ("--texts", "--input", "--docs"):
            if old in opts:
                assert opts[old].name == "corpus", path
        if "--max-texts" in opts:
            assert opts["--max-texts"].name == "limit", path
        if "--encoder" in opts:
            assert opts["--encoder"].name == "model", path


def test_old_spellings_still_work(invoke, no_model, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a\nb\n")
    # reach the output check (which comes before any model) through each alias
    for args in (["encode", "--input", corpus, "--out", corpus], ["encode", "-i", corpus, "--out", corpus],
                 ["diagnose", "--texts", corpus, "--report", corpus],
                 ["lbl2vec", "fit", "--docs", corpus, "--keywords", corpus, "--out", corpus, "-e", "doc2vec"]):
        res = invoke(*args)
        assert res.code == 2 and "error: --out" in res.stderr, (args, res.stderr)
    assert "would overwrite the input" in invoke("eval", "local", "--sts", corpus, "--output", corpus).stderr


def test_quiet_hides_notes_verbose_shows_third_party_warnings(capsys):
    with logging_state():
        configure_logging()
        logging.getLogger("embedkit.cli").info("a note")
        logging.getLogger("embedkit.retrieval.index").warning("skipped 2 blank documents: a, b")
        logging.getLogger("sentence_transformers.models").warning("some weights were not used")
        warnings.warn_explicit("a third-party deprecation", FutureWarning, "x.py", 1, module="transformers.x")
    err = capsys.readouterr().err
    assert err.splitlines() == ["a note", "warning: skipped 2 blank documents: a, b"]
    with logging_state():
        configure_logging(quiet=True)
        logging.getLogger("embedkit.cli").info("a note")
        logging.getLogger("embedkit.cli").warning("careful")
    assert capsys.readouterr().err.splitlines() == ["warning: careful"]
    with logging_state():
        configure_logging(verbose=True)
        logging.getLogger("sentence_transformers.models").warning("some weights were not used")
        warnings.warn_explicit("a third-party deprecation", FutureWarning, "x.py", 1, module="transformers.x")
    err = capsys.readouterr().err
    assert "some weights were not used" in err and "a third-party deprecation" in err
    # the logging state is restored afterwards (other code and tests see the defaults again)
    assert logging.getLogger("embedkit").level == logging.NOTSET
    assert not logging.getLogger("embedkit").handlers


def test_the_one_json_printer(capsys):
    import numpy as np

    print_json({"b": np.float32(0.5), "a": np.arange(3), "p": __import__("pathlib").Path("/x")})
    assert json.loads(capsys.readouterr().out) == {"a": [0, 1, 2], "b": 0.5, "p": "/x"}
    assert to_json({"z": 1, "a": 2}).index('"a"') < to_json({"z": 1, "a": 2}).index('"z"')
