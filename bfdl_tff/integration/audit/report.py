"""``bfdl audit report``: a Markdown audit trail of a B-FDL run (paper 1.2 objectives 5-6: an
interface to track and audit the pipeline; 3.5 the privacy budget over rounds; reputation).

Every section is read from a verified replica's chain (:class:`~bfdl_tff.integration.chain.ChainView`)
except the last, the ledger cost, which quotes the measured (unverified) keys of
``ledger_summary.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from bfdl_tff.integration.audit.context import AuditContext
from bfdl_tff.integration.audit.result import AuditResult
from bfdl_tff.integration.chain import ChainView, RoundView


def header(ctx: AuditContext, v: AuditResult, chain: ChainView) -> list[str]:
    g = chain.genesis
    status = "**PASSED**" if v.ok else f"**FAILED** — {v.first_failure}"
    return [
        f"# B-FDL audit trail: `{ctx.run.name}`", "",
        f"Verification (`bfdl audit verify`): {status}", "",
        f"- chain id `{g.chain_id}`, replicas: {len(ctx.files.replica_dbs())}, height {chain.height}, "
        f"head `{str(chain.head)[:16]}`",
        f"- transactions: {len(chain.txs)} ({sum(1 for t in chain.txs if not t.ok)} rejected by the contracts)",
        f"- privacy budget cap (genesis): epsilon = {g.epsilon_cap}", "",
        "| check | result | detail |", "|---|---|---|",
        *(f"| {c.name} | {'ok' if c.ok else 'FAIL'} | {c.message}{(' — ' + c.where) if (c.where and not c.ok) else ''} |"
          for c in v.checks),
        "",
    ]


def institutions(chain: ChainView) -> list[str]:
    insts = chain.state.query("institutions") or {}
    rows = []
    for pk, v in sorted(insts.items(), key=lambda kv: (kv[1]["role"], kv[1]["name"])):
        st = "active" if v["active"] else f"revoked at block {v['revoked_height']}"
        rows.append(f"| {v['name']} | {v['role']} | `{pk[:16]}…` | {v['registered_height']} | {st} |")
    return ["## Institutions (on-chain registry)", "", "| name | role | key id | registered at block | status |",
            "|---|---|---|---|---|", *rows, ""]


def _round_row(r: int, v: RoundView) -> str:
    contrib = ", ".join(f"{c['name']} ({c['num_examples']})" for c in v.commitments.values())
    eps = (v.privacy or {}).get("epsilon")
    auc = (v.metrics or {}).get("test_macro_auc")
    hs = sorted(v.heights)
    blocks = f"{hs[0]}-{hs[-1]}" if len(hs) > 1 else str(hs[0])
    return (f"| {r} | {blocks} | {v.txs} | {contrib} | `{str(v.model_hash)[:16]}` | "
            f"`{str(v.checkpoint_address)[:12]}` | {'' if eps is None else f'{eps:.4f}'} | "
            f"{'' if auc is None else f'{auc:.4f}'} |")


def rounds_table(chain: ChainView) -> list[str]:
    rounds = chain.rounds()
    out = ["## Rounds", "",
           "| round | blocks | txs | contributors (examples) | global model | checkpoint | epsilon | test macro AUC |",
           "|---|---|---|---|---|---|---|---|", *(_round_row(r, v) for r, v in rounds.items()), ""]
    series = [(r, float(v.privacy["epsilon"])) for r, v in rounds.items() if v.privacy]
    if series:
        cap = chain.genesis.epsilon_cap or max(e for _, e in series) or 1.0
        out += ["## Privacy budget over rounds", ""]
        for r, e in series:
            bar = "#" * max(0, min(40, int(round(40 * e / cap))))
            out.append(f"    round {r:>4}  eps {e:8.4f}  |{bar:<40}| cap {chain.genesis.epsilon_cap}")
        out.append("")
    return out


def reputation(chain: ChainView) -> list[str]:
    rep = chain.state.query("reputation") or {}
    if not rep:
        return []
    names = chain.names
    rows = [f"| {names.get(pk, pk[:16])} | {v['score']:.3f} | {v['participated']} | {v['missed']} | "
            f"{v['accepted']} | {v['rejected']} | {v['examples']} |"
            for pk, v in sorted(rep.items(), key=lambda kv: names.get(kv[0], kv[0]))]
    return ["## Reputation (contract state after the last block)", "",
            "| hospital | score | participated | missed | accepted | rejected | examples |",
            "|---|---|---|---|---|---|---|", *rows, ""]


def rejected(chain: ChainView) -> list[str]:
    bad = [t for t in chain.txs if not t.ok]
    if not bad:
        return []
    names = chain.names
    return ["## Transactions rejected by the contracts", "", "| block | tx | kind | sender | code |",
            "|---|---|---|---|---|",
            *(f"| {t.height} | {t.index} | {t.kind} | {names.get(t.sender, t.sender[:16])} | {t.code} |"
              for t in bad[:200]), ""]


def finalize_section(chain: ChainView) -> list[str]:
    recs = chain.finalize_records()
    if not recs:
        return ["## Result files", "", "No `run.finalize` record: the result files are not bound to the chain.", ""]
    t = recs[-1]
    files = t.payload.get("files") or {}
    return ["## Result files (bound by `run.finalize`)", "",
            f"Block {t.height}, {t.payload.get('rounds')} rounds.", "", "| file | sha256 |", "|---|---|",
            *(f"| {name} | `{digest}` |" for name, digest in sorted(files.items())), ""]


def ledger_cost(summary_file: Path) -> list[str]:
    if not summary_file.is_file():
        return []
    try:
        s = json.loads(summary_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return ["## Ledger cost", "", f"- {summary_file.name} unreadable: {e}", ""]
    if not isinstance(s, dict):
        return ["## Ledger cost", "", f"- {summary_file.name} is not a JSON object", ""]
    out = ["## Ledger cost (measured on the training machine; not verified)", "",
           f"- transactions per round: {s.get('tx_per_round')}"]
    hs, rs = s.get("hook_seconds") or [], s.get("round_seconds") or []
    if hs and rs and sum(rs) > 0:
        out.append(f"- hook time on the training thread: {1000 * sum(hs) / len(hs):.3f} ms/round "
                   f"({100 * sum(hs) / sum(rs):.4f}% of round time); background ledger work "
                   f"{1000 * sum(s.get('ledger_seconds') or [0]) / len(hs):.1f} ms/round")
    out += [f"- bytes on chain (one replica): {s.get('bytes_on_chain')}; off chain: {s.get('bytes_off_chain')}", ""]
    return out


def render(ctx: AuditContext, verification: AuditResult, chain: ChainView) -> str:
    parts = [header(ctx, verification, chain), institutions(chain), rounds_table(chain), reputation(chain),
             rejected(chain), finalize_section(chain), ledger_cost(ctx.files.summary_file)]
    return "\n".join(line for part in parts for line in part) + "\n"


__all__ = ["render"]
