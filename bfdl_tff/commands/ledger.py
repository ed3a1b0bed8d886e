"""``bfdl ledger``: a thin wrapper over ``python -m ledger`` (:mod:`ledger.cli`).

* ``bfdl ledger node --id I --config FILE`` — one replica of a TCP cluster (paper 3.4);
* ``bfdl ledger bench ...`` — throughput / latency benchmark of the PBFT ledger;
* ``bfdl ledger verify --db FILE --genesis GENESIS.json`` — verify one replica database.

Options and behaviour are those of :mod:`ledger.cli`; a :class:`ledger.errors.LedgerError` is
printed as one line (``bfdl: error: ...``) with exit code 2.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from ledger import cli as ledger_cli

    p = sub.add_parser("ledger", help="PBFT ledger: run a replica node, benchmark, verify a chain")
    ledger_cli.add_commands(p, prog="bfdl")
