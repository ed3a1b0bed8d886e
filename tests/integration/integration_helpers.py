"""Helpers of the integration tests (imported as ``integration_helpers``: pytest puts this folder
on ``sys.path``)."""

from __future__ import annotations


def tiny_bfdl_config(name: str, rounds: int = 2):
    """The smallest B-FDL run that exercises the whole path: synthetic 16 px data, a width-8 CNN,
    sample-level DP-SGD at epsilon 1, 4 in-process ledger replicas."""
    from bfdl_tff.config import ExperimentConfig

    cfg = ExperimentConfig(name=name, arm="bfdl", seed=0)
    cfg.model.overrides = {"input_size": 16, "width": 8}
    cfg.federated.rounds = rounds
    cfg.federated.batch_size = 8
    cfg.privacy.mode = "sample"
    cfg.privacy.target_epsilon = 1.0
    cfg.ledger.replicas = 4
    return cfg
