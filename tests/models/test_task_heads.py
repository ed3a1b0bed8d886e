"""Heads, losses and evaluation follow the data's task (issue 15.1): a binary task is one sigmoid
output with BCE and reports accuracy at 0.5 beside the validation threshold; a multiclass task is a
softmax with categorical cross-entropy, one-vs-rest macro AUC and top-1 accuracy; a model that does
not fit the task is refused in one line before training."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from bfdl_tff.data.tasks import NIH_TASK, Task
from bfdl_tff.errors import ConfigError
from bfdl_tff.federated.evaluation import evaluate_predictions
from bfdl_tff.federated.inputs import FederationData, validate_setup
from bfdl_tff.models import losses as mlosses
from bfdl_tff.models import registry
from bfdl_tff.models.model_config import for_task

BINARY = Task("binary", ("pneumonia",))
THREE = Task("multiclass", ("a", "b", "c"))


def _cnn(**kw):
    return registry.load_model_config("cnn32", **kw)


def test_for_task_derives_width_and_activation():
    base = _cnn()
    assert (base.num_findings, base.head) == (14, "sigmoid")
    b = for_task(base, kind="binary", num_outputs=1)
    m = for_task(base, kind="multiclass", num_outputs=3)
    assert (b.num_findings, b.head) == (1, "sigmoid")
    assert (m.num_findings, m.head) == (3, "softmax")
    assert for_task(base, kind="multilabel", num_outputs=14) == base


def test_for_task_refuses_a_fixed_head_that_contradicts_the_task():
    cfg = _cnn(num_findings=14)
    with pytest.raises(ConfigError) as e:
        for_task(cfg, kind="binary", num_outputs=1, fixed={"num_findings": 14}, source="exp.yaml")
    msg = str(e.value)
    assert "exp.yaml" in msg and "model.overrides.num_findings" in msg and "binary" in msg
    with pytest.raises(ConfigError, match="model.overrides.head"):
        for_task(_cnn(head="sigmoid"), kind="multiclass", num_outputs=3, fixed={"head": "sigmoid"})
    with pytest.raises(ConfigError, match="class_weighting"):
        for_task(_cnn(class_weighting="inverse_frequency"), kind="multiclass", num_outputs=3)


def test_binary_head_is_one_sigmoid_with_bce():
    cfg = for_task(_cnn(), kind="binary", num_outputs=1)
    model = registry.build_model(cfg, seed=0)
    assert tuple(model.output_shape) == (None, 1)
    p = model.predict(np.random.default_rng(0).random((5, 32, 32, 1), dtype=np.float32), verbose=0)
    assert p.shape == (5, 1) and np.all((p > 0) & (p < 1))
    loss, _ = mlosses.build_loss(cfg)
    assert isinstance(loss, tf.keras.losses.BinaryCrossentropy)
    y, q = np.array([[1.0], [0.0]], np.float32), np.array([[0.8], [0.3]], np.float32)
    assert float(loss(y, q)) == pytest.approx(-(np.log(0.8) + np.log(0.7)) / 2, rel=1e-5)


def test_multiclass_head_is_softmax_with_categorical_ce():
    cfg = for_task(_cnn(), kind="multiclass", num_outputs=3)
    model = registry.build_model(cfg, seed=0)
    p = model.predict(np.random.default_rng(1).random((4, 32, 32, 1), dtype=np.float32), verbose=0)
    assert p.shape == (4, 3) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    loss, _ = mlosses.build_loss(cfg)
    y = np.array([[0, 1, 0], [0, 0, 1]], np.float32)
    q = np.array([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]], np.float32)
    assert float(loss(y, q)) == pytest.approx(-(np.log(0.5) + np.log(0.8)) / 2, rel=1e-5)
    per, _ = mlosses.build_loss(cfg, reduction="none")
    assert np.allclose(per(y, q).numpy(), [-np.log(0.5), -np.log(0.8)], rtol=1e-5)
    with pytest.raises(ValueError, match="softmax"):
        mlosses.build_loss(cfg, class_weights=[1.0, 2.0, 3.0])


def test_binary_evaluation_reports_accuracy_at_half_and_at_threshold():
    y = np.array([[1], [1], [0], [0], [1]], np.float32)
    p = np.array([[0.9], [0.4], [0.45], [0.1], [0.6]])
    ev = evaluate_predictions(y, p, findings=["pneumonia"], thresholds={"pneumonia": 0.42},
                              threshold_rule="youden_val", kind="binary")
    assert ev.task_kind == "binary" and ev.per_finding_auc["pneumonia"] == pytest.approx(5 / 6)
    assert ev.accuracy_at_half == pytest.approx(4 / 5)  # 0.4 is a miss at 0.5
    assert ev.per_label_accuracy == pytest.approx(3 / 5)  # at 0.42: 0.45 becomes a false positive
    assert ev.top1_accuracy is None


def test_multiclass_evaluation_is_one_vs_rest_with_top1():
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
    p = np.array([[.7, .2, .1], [.2, .5, .3], [.1, .3, .6], [.3, .4, .3], [.6, .3, .1], [.2, .2, .6]])
    ev = evaluate_predictions(y, p, findings=list(THREE.labels), thresholds={c: 0.5 for c in THREE.labels},
                              threshold_rule="fixed", kind="multiclass")
    assert ev.top1_accuracy == pytest.approx(4 / 6)
    assert ev.majority_class_accuracy == pytest.approx(2 / 6)
    assert ev.loss == pytest.approx(-np.mean(np.log(p[np.arange(6), y.argmax(1)])), rel=1e-6)
    assert set(ev.per_finding_auc) == {"a", "b", "c"} and all(v is not None for v in ev.per_finding_auc.values())


class _Set:
    def __init__(self, n: int, width: int, task: Task) -> None:
        self.x = np.zeros((n, 32, 32, 1), np.float32)
        self.y = np.zeros((n, width), np.float32)
        self.task = task

    def __len__(self) -> int:
        return len(self.x)


def _fed(task: Task) -> FederationData:
    w = task.num_outputs
    return FederationData(names=["h"], train={"h": _Set(4, w, task)}, val={"h": _Set(2, w, task)}, test=_Set(3, w, task),
                          task=task)


def test_validate_setup_refuses_a_model_that_does_not_fit_the_task(tmp_path):
    from bfdl_tff.config import ExperimentConfig

    cfg = ExperimentConfig()
    cfg.federated.clients_per_round = 1
    with pytest.raises(ConfigError, match="14 outputs, labels have 1.*binary"):
        validate_setup(cfg, _fed(BINARY), _cnn(), source="exp.yaml")
    with pytest.raises(ConfigError, match="head sigmoid.*multiclass"):
        validate_setup(cfg, _fed(THREE), _cnn(num_findings=3), source="exp.yaml")
    validate_setup(cfg, _fed(BINARY), for_task(_cnn(), kind="binary", num_outputs=1), source="exp.yaml")
    assert _fed(NIH_TASK).resolved_task() == NIH_TASK
