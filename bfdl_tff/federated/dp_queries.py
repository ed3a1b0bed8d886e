"""A seeded Gaussian sum query for DP-FedAvg (paper 3.1 / 3.5: differential privacy noise).

tensorflow-privacy's ``GaussianSumQuery`` draws its noise from an unseeded
``tf.random_normal_initializer``, so runs are not reproducible. :class:`SeededGaussianSumQuery`
is the same mechanism (clip each record to L2 norm ``l2_norm_clip``, add
``N(0, stddev^2)`` to every coordinate of the sum) with counter-based stateless noise: the
global state carries a ``[2]`` int64 seed that is split into one key per tensor and advanced
every round, so round ``t`` of a run with ``noise_seed`` always gets the same noise (and a resumed
run continues the same noise stream: the seed is part of the checkpointed aggregator state).

It plugs into ``tff.aggregators.DifferentiallyPrivateFactory(query, ...)`` wrapped in
``tensorflow_privacy.NormalizedQuery`` for the mean over ``clients_per_round``, which is what
``DifferentiallyPrivateFactory.gaussian_fixed`` builds internally.
"""

from __future__ import annotations

import collections

import dp_accounting
import tensorflow as tf
import tensorflow_privacy as tfp


class SeededGaussianSumQuery(tfp.GaussianSumQuery):
    """``GaussianSumQuery`` with reproducible, stateless, seeded noise."""

    _GlobalState = collections.namedtuple("_GlobalState", ["l2_norm_clip", "stddev", "seed"])

    def __init__(self, l2_norm_clip: float, stddev: float, *, noise_seed: int) -> None:
        super().__init__(l2_norm_clip, stddev)
        self._noise_seed = int(noise_seed)

    def make_global_state(self, l2_norm_clip, stddev, seed=None):  # type: ignore[override]
        if seed is None:
            seed = tf.constant([self._noise_seed, 0], tf.int64)
        return self._GlobalState(tf.cast(l2_norm_clip, tf.float32), tf.cast(stddev, tf.float32), seed)

    def initial_global_state(self):
        return self.make_global_state(self._l2_norm_clip, self._stddev)

    def get_noised_result(self, sample_state, global_state):
        leaves = tf.nest.flatten(sample_state)
        keys = tf.random.experimental.stateless_split(global_state.seed, num=len(leaves) + 1)
        noised = [
            v + tf.cast(tf.random.stateless_normal(tf.shape(v), seed=keys[i], stddev=global_state.stddev), v.dtype)
            for i, v in enumerate(leaves)
        ]
        result = tf.nest.pack_sequence_as(sample_state, noised)
        new_state = global_state._replace(seed=keys[-1])
        noise_multiplier = global_state.stddev / global_state.l2_norm_clip
        return result, new_state, dp_accounting.GaussianDpEvent(noise_multiplier)


def normalized_seeded_gaussian_query(
    *, l2_norm_clip: float, noise_multiplier: float, clients_per_round: int, noise_seed: int
) -> tfp.DPQuery:
    """The DP-FedAvg mean query: seeded Gaussian sum / ``clients_per_round``."""
    sum_query = SeededGaussianSumQuery(l2_norm_clip, l2_norm_clip * noise_multiplier, noise_seed=noise_seed)
    return tfp.NormalizedQuery(sum_query, denominator=float(clients_per_round))


__all__ = ["SeededGaussianSumQuery", "normalized_seeded_gaussian_query"]
