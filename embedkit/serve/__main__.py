"""``python -m embedkit.serve INDEX ...``: the ``embedkit serve`` command (same options)."""

from __future__ import annotations

import os
import sys


def main(argv=None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from embedkit.cli.main import run_guarded
    from embedkit.cli.serve import serve

    code = run_guarded(lambda: serve.main(args=argv, prog_name="embedkit serve", standalone_mode=False))
    sys.exit(code)


if __name__ == "__main__":
    main()
