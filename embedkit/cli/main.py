"""The ``embedkit`` command: a click group whose subcommands are imported only when used.

Each command group lives in its own module under ``embedkit/cli/`` and stays thin: check the
arguments (cheap checks first), call the library, print. This module holds the one error handler:
a bad argument or an :class:`~embedkit.errors.EmbedkitError` raised anywhere is printed as one line
on stderr (``error: ...``) with exit status 2, never as a traceback; Ctrl-C exits 130.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
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
    "mine": "embedkit.cli.mine:mine",
    "export": "embedkit.cli.export:export",
    "serve": "embedkit.cli.serve:serve",
}

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _available() -> dict[str, str]:
    out = {}
    for name, target in COMMANDS.items():
        module = target.split(":")[0]
        if importlib.util.find_spec(module) is not None:
            out[name] = target
    return out


def _error(msg: str, code: int = EXIT_USAGE) -> int:
    msg = " ".join(str(msg).split()) or "failed"
    click.echo(f"error: {msg}", err=True)
    return code


def _usage_error(e: click.UsageError) -> str:
    msg = e.format_message()
    ctx = e.ctx
    if ctx is not None and not isinstance(e, click.exceptions.NoArgsIsHelpError):
        msg += f" (see: {ctx.command_path} --help)"
    return msg


def run_guarded(func) -> int:
    """Run ``func()`` and turn every user-facing failure into one line on stderr; return the exit status."""
    from embedkit.cli._common import configure_logging, logging_state

    with logging_state():
        configure_logging()
        try:
            rv = func()
        except EmbedkitError as e:
            return _error(str(e))
        except click.exceptions.Exit as e:
            return e.exit_code
        except click.exceptions.Abort as e:
            cause = e.__cause__ or e.__context__
            if isinstance(cause, EOFError):
                # click turns EOFError into Abort; a truncated .gz raises EOFError: that is bad input, not Ctrl-C
                return _error(f"an input ended unexpectedly (a truncated or corrupt file?): {cause}")
            click.echo("aborted", err=True)
            return EXIT_INTERRUPTED
        except KeyboardInterrupt:
            click.echo("aborted", err=True)
            return EXIT_INTERRUPTED
        except click.UsageError as e:
            return _error(_usage_error(e))
        except click.ClickException as e:
            return _error(e.format_message(), e.exit_code)
        except EOFError as e:
            return _error(f"an input ended unexpectedly (a truncated or corrupt file?): {e}")
        except gzip.BadGzipFile as e:
            return _error(f"not a valid gzip file: {e}")
        except UnicodeDecodeError as e:
            return _error(f"not valid UTF-8 at byte {e.start}: {e.reason}")
        except OSError as e:
            if e.filename is not None:
                return _error(f"{e.filename}: {e.strerror or e}")
            return _error(str(e))
        return rv if isinstance(rv, int) else 0


class LazyGroup(click.Group):
    """The root group: lazily imported subcommands and the one error handler (also under click's test runner)."""

    def list_commands(self, ctx):
        return sorted(_available())

    def get_command(self, ctx, name):
        target = _available().get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        code = run_guarded(lambda: super(LazyGroup, self).main(
            args, "embedkit", complete_var, standalone_mode=False, **extra))
        sys.exit(code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="embedkit")
def cli():
    """embedkit: train, compress, index, evaluate and diagnose text embedding models.

    \b
    Quick start (offline, default model all-MiniLM-L6-v2):
      embedkit demo
      embedkit index build --corpus docs.txt --out my_index --spec binary --rescore 4
      embedkit index search my_index "how do I sort a list?" -k 5

    \b
    Every command: -m/--model M, -c/--corpus PATH, -o/--out PATH (never replaces what embedkit
    did not write; --overwrite replaces an earlier output), --json, -q/--quiet, -v/--verbose.
    """


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the command line and exit with its status (0, 2 bad input, 130 interrupted)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli.main(args=argv, prog_name="embedkit")


if __name__ == "__main__":
    main()
