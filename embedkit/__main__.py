"""``python -m embedkit ...``: the ``embedkit`` command line (e.g. ``python -m embedkit serve INDEX``)."""

from embedkit.cli.main import main

if __name__ == "__main__":
    main()
