#!/usr/bin/env bash
# Reproduce the paper's Table 3.3, Figures 2-5, the ledger / communication / privacy tables and
# results/REPORT.md (paper vs measured, claims C1-C14) from this repository's own runs.
#
#   scripts/reproduce_all.sh                          default profile: synthetic data, small CNN,
#                                                     3 arms x 3 seeds, ~20 min on 2 CPU cores
#   scripts/reproduce_all.sh --profile quick          CI-sized smoke of every stage (a few minutes)
#   scripts/reproduce_all.sh --profile paper --data-root /data/ChestX-ray14
#                                                     NIH ChestX-ray14, ResNet-50 + U-Net at 224 px:
#                                                     a GPU job (roughly 2-4 GPU-days; estimate)
#   scripts/reproduce_all.sh --stage arms             re-run one stage (repeatable); finished stages
#                                                     are skipped unless --force
#   scripts/reproduce_all.sh --list                   stages and profiles
#   scripts/reproduce_all.sh --profile paper --dry-run --one-round --stage arms
#                                                     one round of each paper arm (ResNet-50 + U-Net,
#                                                     224 px, DP, secure aggregation, ledger) on 24
#                                                     synthetic images: ~6 min on 2 CPU cores
#
# Profiles are configs/profiles/<name>.yaml; each names the experiment config under
# configs/experiments/ that every run uses (docs/reproduction.md, "Profiles").
#
# Outputs: runs/ (run directories, logs/<stage>.log), results/ (REPORT.md, table33.{csv,md},
# fig2..fig5 .{png,pdf,csv}, ledger_tables.*, communication.*, privacy_budget.*, stages.json).
# Every stage runs in its own process with output to runs/logs/<stage>.log (never a pipe).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh   # idempotent: one line when .venv is up to date, a full install when missing/stale
export TF_CPP_MIN_LOG_LEVEL=2
export PYTHONHASHSEED=0
exec .venv/bin/python -m bfdl_tff.reproduce "$@"
