"""The ``embedkit`` command: a click group whose subcommands are imported only when used.

Each command group lives in its own module under ``embedkit/cli/`` and stays thin: parse the
arguments, call the library, print. Errors caused by the user's input (:class:`EmbedkitError`)
are printed as one line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from embedkit.errors import EmbedkitError

# command name -> "module:attribute"; a module that is not present is simply not offered.
COMMANDS: dict[str, str] = {
    "demo": "embedkit.cli.demo:demo",
    "encode": "embedkit.cli.encode:encode",
    "index": "embedkit.cli.index:index",
    "train": "embedkit.cli.train:train",
    "eval": "embedkit.cli.eval:eval_group",
    "diagnose": "embedkit.cli.diagnose:diagnose",
    "debias": "embedkit.cli.debias:debias",
    "lbl2vec": "embedkit.cli.lbl2vec:lbl2vec",
}


def _available() -> dict[str, str]:
    out = {}
    for name, target in COMMANDS.items():
        module = target.split(":")[0]
        if importlib.util.find_spec(module) is not None:
            out[name] = target
    return out


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(_available())

    def get_command(self, ctx, name):
        target = _available().get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="embedkit")
def cli():
    """embedkit: train, compress, index, evaluate and diagnose text embedding models.

    \b
    Quick start (offline, default model all-MiniLM-L6-v2):
      embedkit demo
      embedkit index build --corpus docs.txt --out my_index --spec binary --rescore 4
      embedkit index search my_index "how do I sort a list?" -k 5
    """


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        cli.main(args=argv, standalone_mode=False)
    except EmbedkitError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except FileNotFoundError as e:
        click.echo(f"error: file not found: {e.filename or e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
