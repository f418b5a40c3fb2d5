"""The command line: parsers (parsers.py) and one module per command family; errors become exit codes in one place."""

from rtkp.cli.parsers import DEFAULT_MODEL, build_parser, main

__all__ = ["DEFAULT_MODEL", "build_parser", "main"]
