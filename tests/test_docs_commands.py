"""The docs cannot drift from the command line (issue 28 item 2).

Every ``embedkit ...`` command in README.md and docs/*.md — in code blocks (shell commands and the
README's synopsis) and in inline code spans — must name existing subcommands, and every flag it uses
must be one that the command's ``--help`` shows: no flag that does not exist, no hidden old spelling
(``--input``, ``--texts``, ``--backend ivf`` ...). ``--backend`` means the encoder runtime only.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from embedkit.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENCODER_BACKENDS = {"torch", "onnx", "onnx-int8", "openvino"}


def _split_commands(line: str) -> list[str]:
    """Split a shell line on ``&&``, ``;`` and `` | `` outside quotes and brackets."""
    parts, cur, depth, quote, i = [], [], 0, None, 0
    while i < len(line):
        c = line[i]
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "([":
            depth += 1
        elif c in ")]":
            depth = max(0, depth - 1)
        elif depth == 0 and (line.startswith("&&", i) or c == ";" or line.startswith(" | ", i - 1) and c == "|"):
            parts.append("".join(cur))
            cur = []
            i += 2 if line.startswith("&&", i) else 1
            continue
        cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _tokens(text: str, shell: bool) -> list[str]:
    if shell:
        try:
            return shlex.split(text, comments=True)
        except ValueError:
            pass
    return text.split("#", 1)[0].split() if shell else text.split()


def _commands():
    """``(where, tokens after 'embedkit', shell)`` for every embedkit command in the docs."""
    found = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        in_block, lang, buf, start = False, "", "", 0
        for n, raw in enumerate(lines, 1):
            if raw.lstrip().startswith("```"):
                in_block, lang = (not in_block), raw.strip()[3:].strip()
                continue
            if in_block:
                if lang == "python":
                    continue
                line = raw.rstrip()
                if line.endswith("\\"):
                    buf, start = buf + line[:-1] + " ", start or n
                    continue
                text, where, buf, start = buf + line, f"{path.name}:{start or n}", "", 0
                shell = lang in ("bash", "sh", "console", "")
                for seg in _split_commands(text) if shell else [text]:
                    toks = _tokens(seg.strip().removeprefix("$ "), shell)
                    toks = _after_embedkit(toks)
                    if toks is not None:
                        found.append((where, toks, shell))
            else:
                for span in re.findall(r"`([^`]+)`", raw):
                    toks = _after_embedkit(span.split())
                    if toks is not None:
                        found.append((f"{path.name}:{n} (inline)", toks, False))
    return found


def _after_embedkit(toks):
    for prefix in (["embedkit"], ["python", "-m", "embedkit"], [".venv/bin/embedkit"]):
        if toks[: len(prefix)] == prefix:
            return toks[len(prefix):]
    return None


def _visible_options(cmd) -> dict[str, click.Option]:
    out = {"-h": None, "--help": None}
    for p in cmd.params:
        if isinstance(p, click.Option) and not p.hidden:
            hidden = set(getattr(p, "hidden_aliases", ()))
            out.update({o: p for o in p.opts + p.secondary_opts if o not in hidden})
    return out


def _resolve(toks):
    """Walk the subcommands; returns (command, path, rest) or raises AssertionError."""
    cmd, path, i = cli, [], 0
    while isinstance(cmd, click.Group) and i < len(toks) and not toks[i].startswith(("-", "[", "(", "...")):
        names = toks[i].split("|")
        subs = [cmd.get_command(click.Context(cmd), n) for n in names]
        if any(s is None for s in subs):
            if getattr(cmd, "invoke_without_command", False):
                break
            raise AssertionError(f"unknown subcommand {toks[i]!r} of `embedkit {' '.join(path)}`")
        if len(names) > 1:  # `lbl2vec fit|predict|search`: a synopsis naming several subcommands
            return None, path + [toks[i]], []
        cmd, path, i = subs[0], path + names, i + 1
    return cmd, path, toks[i:]


def _help_examples():
    """``(where, tokens, shell)`` for every ``embedkit ...`` line of every command's --help example."""
    found = []

    def walk(cmd, path):
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(click.Context(cmd)):
                walk(cmd.get_command(click.Context(cmd), name), path + [name])
        text = cmd.help or ""
        if "Example" in text:
            body = text.split("Example", 1)[1].replace("\\\n", " ")
            for line in body.splitlines():
                for seg in _split_commands(line.strip()):
                    toks = _after_embedkit(_tokens(seg.strip(), True))
                    if toks is not None:
                        found.append((f"embedkit {' '.join(path)} --help", toks, True))

    walk(cli, [])
    return found


COMMANDS = _commands() + _help_examples()


def test_the_docs_have_commands_to_check():
    where = {w.split(":")[0] for w, _, _ in COMMANDS}
    assert len(COMMANDS) > 60 and {"README.md", "serving.md", "lbl2vec.md", "scaling.md"} <= where


@pytest.mark.parametrize("where, toks, shell", COMMANDS, ids=[w for w, _, _ in COMMANDS])
def test_every_documented_flag_is_in_the_commands_help(where, toks, shell):
    cmd, path, rest = _resolve(toks)
    if cmd is None or not path:
        return
    visible = _visible_options(cmd)
    for j, tok in enumerate(rest):
        flag = tok.lstrip("[(").rstrip("]).,:").split("=", 1)[0]
        if not re.fullmatch(r"--?[A-Za-z][\w-]*", flag):
            continue
        assert flag in visible, (f"{where}: `embedkit {' '.join(path)}` has no option {flag} in its --help "
                                 f"(documented: {' '.join(toks)})")
        if flag == "--backend" and j + 1 < len(rest) and not rest[j + 1].startswith("-"):
            value = rest[j + 1].rstrip("]).,")
            assert set(value.split("|")) <= ENCODER_BACKENDS | {"BACKEND"}, (
                f"{where}: --backend {value}: --backend is the encoder runtime (torch, onnx, onnx-int8); "
                "the FAISS structure is --index-type")


def _hidden_aliases(cmd=cli) -> set[str]:
    out = {o for p in cmd.params for o in getattr(p, "hidden_aliases", ()) if o.startswith("--")}
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(click.Context(cmd)):
            out |= _hidden_aliases(cmd.get_command(click.Context(cmd), name))
    return out


def test_prose_flags_use_the_current_names():
    """Flags mentioned on their own in the prose (`--backend ivf`): the FAISS structure is --index-type, and
    hidden old spellings appear only in the README's table of aliases."""
    hidden = _hidden_aliases() - {"--spec"}  # --spec is a hidden alias of --specs on `eval` only, and a real option
    bad = []
    for path in DOCS:
        in_alias_table = False
        for n, raw in enumerate(path.read_text().splitlines(), 1):
            if raw.startswith("#"):
                in_alias_table = path.name == "README.md" and "One vocabulary" in raw
            for span in re.findall(r"`([^`]+)`", raw):
                toks = span.split()
                if not toks or not toks[0].startswith("-"):
                    continue
                flag = toks[0].split("=", 1)[0]
                values = set(toks[1].replace("\\|", "|").split("|")) if len(toks) > 1 else set()
                if flag == "--backend" and not values <= ENCODER_BACKENDS and not in_alias_table:
                    bad.append(f"{path.name}:{n}: `{span}` (the FAISS structure is --index-type)")
                if flag in hidden and not in_alias_table:
                    bad.append(f"{path.name}:{n}: `{span}` is a hidden old spelling")
    assert bad == []
