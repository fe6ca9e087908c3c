

__all__: list[str] = []  # the command line is `embedkit` (embedkit.cli.main:main), not an import API
