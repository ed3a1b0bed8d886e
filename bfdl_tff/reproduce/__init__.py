"""One-command reproduction of the paper's results (issue 9): ``scripts/reproduce_all.sh`` =
``python -m bfdl_tff.reproduce``.

Modules: :mod:`~bfdl_tff.reproduce.profiles` (``configs/profiles/*.yaml``: the experiment config
every run uses and the options of each stage), :mod:`~bfdl_tff.reproduce.stages` (data, arms,
ledger_off, client_dp, attacks, ledger_bench, scalability, audit, privacy_budget, figures,
report), :mod:`~bfdl_tff.reproduce.context` (one run: skip, resume or train),
:mod:`~bfdl_tff.reproduce.budget` (noise for the target epsilon), :mod:`~bfdl_tff.reproduce.records`
(``results/stages.json``) and :mod:`~bfdl_tff.reproduce.orchestrator` (one process per stage,
logs, summary). Layout and profiles: ``docs/reproduction.md``.
"""
