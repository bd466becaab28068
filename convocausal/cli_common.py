"""What every ``convocausal`` subcommand shares: the usage-error type and the common options.

Kept apart from ``convocausal/cli.py`` because the subcommand modules (``cli_init``,
``cli_estimate``, ``cli_questions``) sit in the ``convocausal`` layer, below the entry point
(``tests/test_layers.py``), and must not import it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DOCS = "docs/CLI.md"  # the command-line reference in a clone of the repository


class UsageError(Exception):
    """Bad arguments or bad input: exit 2 with a one-line message naming what to fix."""


def common_options() -> argparse.ArgumentParser:
    """The parent parser of every subcommand: ``--verbose``, given after the subcommand like any option."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="on an error, print the full traceback (and Dagster's log during `run`) "
                        "instead of one line")
    return p


def store_option(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--store``: one spelling and one default for every subcommand that opens the store."""
    p.add_argument("--store", type=Path, default=Path("convocausal.duckdb"), metavar="FILE",
                   help=f"{help_text} (default: ./convocausal.duckdb; its per-day parts live in FILE.parts/)")
