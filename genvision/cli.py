"""The `genvision` command: argparse subcommands that parse, validate, build a config and call one library function.

Each module in `genvision.commands` registers its subcommands with `register(subparsers)` and keeps heavy imports
inside its run functions, so `genvision --version` and `--help` stay fast. Errors from the library that the user can
fix arrive as `GenvisionError` and leave as one line on stderr with the error's exit code (2 for bad input).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from genvision.errors import GenvisionError
from genvision.version import __version__

COMMAND_MODULES = (
    "genvision.commands.train",
    "genvision.commands.sample",
    "genvision.commands.evaluate",
    "genvision.commands.report",
)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are a single line on stderr and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="genvision", description="Train DCGANs and VAEs, sample grids, score with FID.")
    parser.add_argument("--version", action="version", version=f"genvision {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `genvision` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.run(args) or 0)
    except GenvisionError as error:
        print(f"genvision {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"genvision {args.command}: interrupted", file=sys.stderr)
        return 130


def run_command(command: str, argv: list[str] | None = None) -> int:
    """`genvision COMMAND ARGV...`: used by the thin scripts train_gan.py and train_vae.py."""
    return main([command, *(sys.argv[1:] if argv is None else argv)])
