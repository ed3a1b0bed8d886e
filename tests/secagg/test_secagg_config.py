"""``privacy.secure_aggregation`` (issue 18.2): default masked; old files' ``secure_sum`` keeps its
meaning (true = TFF's secure sum, false = none); both keys together, or a ring TFF cannot sum,
are one-line config errors naming the file and key."""

from __future__ import annotations

import pytest

from bfdl_tff.config import ExperimentConfig, load_config
from bfdl_tff.errors import ConfigError


def _write(tmp_path, privacy: str):
    p = tmp_path / "exp.yaml"
    p.write_text(f"name: x\narm: bfdl\nprivacy:\n{privacy}", encoding="utf-8")
    return p


def test_default_is_masked():
    assert ExperimentConfig().privacy.aggregation == "masked"


@pytest.mark.parametrize("text,mode", [
    ("  secure_sum: true\n", "tff_secure_sum"),
    ("  secure_sum: false\n", "none"),
    ("  secure_aggregation: tff_secure_sum\n", "tff_secure_sum"),
    ("  secure_aggregation: masked\n", "masked"),
    ("  mode: client\n", "masked"),
])
def test_old_and_new_keys(tmp_path, text, mode):
    assert load_config(_write(tmp_path, text)).privacy.aggregation == mode


@pytest.mark.parametrize("text,key,words", [
    ("  secure_sum: true\n  secure_aggregation: masked\n", "privacy.secure_sum", "replaced by privacy.secure_aggregation"),
    ("  secure_aggregation: bonawitz\n", "privacy.secure_aggregation", "must be one of"),
    ("  secagg_bits: 48\n", "privacy.secagg_bits", "must be <= 32"),
    ("  secagg_clip: 0\n", "privacy.secagg_clip", "must be > 0"),
])
def test_bad_keys_are_config_errors(tmp_path, text, key, words):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and key in msg and words in msg and "\n" not in msg


def test_adaptive_clipping_needs_no_secure_aggregation(tmp_path):
    p = _write(tmp_path, "  mode: client\n  adaptive_clipping: true\n")
    with pytest.raises(ConfigError, match="privacy.adaptive_clipping: cannot be combined with secure_aggregation: masked"):
        load_config(p)
    ok = _write(tmp_path, "  mode: client\n  adaptive_clipping: true\n  secure_aggregation: none\n")
    assert load_config(ok).privacy.aggregation == "none"
