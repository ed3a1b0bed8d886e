"""The ``bfdl`` command line.

Subcommands live in ``bfdl_tff.commands.<name>``; each module defines
``register(subparsers) -> None`` which adds its parser and sets ``func`` (called with the parsed
``args``; returns an exit code). Heavy imports (TensorFlow, TFF) happen inside the handlers, so
``bfdl --version`` and ``bfdl --help`` stay fast.

User errors (:class:`bfdl_tff.errors.BfdlError`, :class:`ledger.errors.LedgerError`) print one line ``bfdl: error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn, Sequence

from bfdl_tff import __version__
from bfdl_tff.errors import BfdlError
from ledger.errors import LedgerError

COMMAND_MODULES = (
    "info",
    "config",
    "data",
    "models",
    "train",
    "evaluate",
    "ledger",
    "keys",
    "audit",
    "attack",
    "figures",
    "report",
)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``bfdl train: error: ... (see bfdl train --help)``), exit 2;
    sub-commands inherit it (argparse makes sub-parsers of the parent's class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bfdl",
        description="B-FDL reproduction: federated learning (TFF) + differential privacy + PBFT ledger",
    )
    parser.add_argument("--version", action="version", version=f"bfdl-tff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"bfdl_tff.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except (BfdlError, LedgerError) as e:
        print(f"bfdl: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("bfdl: interrupted", file=sys.stderr)
        return 130
    finally:
        if "bfdl_tff.tff_runtime" in sys.modules:
            sys.modules["bfdl_tff.tff_runtime"].shutdown_workers()
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
