"""Membership inference (loss threshold, LiRA) on tiny in-memory models (claim C3).

A deliberately overfit model (60 training images with random labels, 60 epochs) must be
attackable; a model trained on a third, disjoint set must not separate a random split."""

from __future__ import annotations

import numpy as np
import pytest

from bfdl_tff.privacy_eval import membership as MI
from bfdl_tff.privacy_eval import toy

SIZE = 16
RECIPE = MI.ShadowRecipe(epochs=60, batch_size=16, lr=0.01, optimizer="adam")


def _build():
    return toy.mlp_model(SIZE, hidden=64)


@pytest.fixture(scope="module")
def data():
    x, _ = toy.toy_images(240, SIZE, seed=5)
    y = (np.random.default_rng(0).uniform(size=(240, 14)) < 0.3).astype(np.float32)
    return (x[:80], y[:80]), (x[80:160], y[80:160]), (x[160:], y[160:])


def test_statistics():
    p = np.array([[0.9, 0.2], [0.5, 0.5]])
    y = np.array([[1.0, 0.0], [1.0, 1.0]])
    # phi = sum_j log(p_true / (1 - p_true)): row 0 -> log 9 + log 4, row 1 -> 0
    np.testing.assert_allclose(MI.lira_statistic(p, y), [np.log(9) + np.log(4), 0.0], rtol=1e-6)
    np.testing.assert_allclose(MI.per_example_loss(p, y), [-(np.log(0.9) + np.log(0.8)) / 2, -np.log(0.5)], rtol=1e-6)
    with pytest.raises(ValueError):
        MI.lira_attack(None, _build, (p, y), (p, y), n_shadows=3)


def test_overfit_model_is_separated_by_both_attacks(data):
    members, nonmembers, _ = data
    target = MI.train_keras(_build, *members, recipe=RECIPE, seed=1)
    loss = MI.loss_threshold_attack(target, members, nonmembers)
    assert loss["mean_loss_members"] < loss["mean_loss_nonmembers"]
    assert loss["auc"] > 0.75 and loss["advantage"] > 0.3, loss
    lira = MI.lira_attack(target, _build, members, nonmembers, n_shadows=4, recipe=RECIPE, seed=0)
    assert lira["auc"] > 0.75 and lira["n_shadows"] == 4, lira
    off = MI.lira_attack(target, _build, members, nonmembers, n_shadows=4, recipe=RECIPE, seed=0, online=False)
    assert off["auc"] > 0.7 and off["variant"] == "offline", off


def test_random_split_is_not_separated(data):
    members, nonmembers, other = data
    target = MI.train_keras(_build, *other, recipe=RECIPE, seed=2)  # trained on neither set
    loss = MI.loss_threshold_attack(target, members, nonmembers)
    assert abs(loss["auc"] - 0.5) < 0.15, loss
    lira = MI.lira_attack(target, _build, members, nonmembers, n_shadows=4, recipe=RECIPE, seed=0)
    assert abs(lira["auc"] - 0.5) < 0.15, lira


def test_shadows_are_cached_and_have_the_target_size(data):
    """Shadows train on half the audited population plus the always-in images; a second attack with
    the same cache key reuses them; the stability list re-scores with the first 2, 4 shadows."""
    members, nonmembers, other = data
    sizes = []

    def counting(build, x, y, *, recipe, seed):
        sizes.append(len(x))
        return MI.train_keras(build, x, y, recipe=MI.ShadowRecipe(epochs=2, batch_size=16, lr=0.01,
                                                                   optimizer="adam"), seed=seed)

    target = MI.train_keras(_build, *members, recipe=RECIPE, seed=1)
    key = MI.digest(members[0], nonmembers[0], "test")
    a = MI.lira_attack(target, _build, members, nonmembers, n_shadows=4, recipe=RECIPE, seed=0, train_fn=counting,
                       always_in=other, cache_key=key)
    assert sizes == [80 + 80] * 4 and a["shadow_train_size"] == 160
    b = MI.lira_attack(target, _build, members, nonmembers, n_shadows=4, recipe=RECIPE, seed=0, train_fn=counting,
                       always_in=other, cache_key=key)
    assert len(sizes) == 4 and b["auc"] == a["auc"]  # reused, not retrained
    assert [s["n_shadows"] for s in a["stability"]] == [2, 4] and a["stability"][-1]["auc"] == a["auc"]
