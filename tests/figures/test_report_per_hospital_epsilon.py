"""Issue 16.7: the report's C3/C9 rows name each hospital's per-patient epsilon from privacy.json."""

from __future__ import annotations

import json
from types import SimpleNamespace

from paper_figures.report_claims import per_hospital_epsilon


def test_per_hospital_epsilon_from_privacy_json(tmp_path):
    path = tmp_path / "privacy.json"
    path.write_text(json.dumps({"mode": "sample", "unit": "patient", "per_hospital": [
        {"hospital": "hospital_a", "epsilon": 0.99731, "delta": 1e-05, "noise_multiplier": 1.31, "units": "patient",
         "num_units": 812},
        {"hospital": "hospital_b", "epsilon": 1.00012, "delta": 1e-05, "noise_multiplier": 1.02, "units": "patient",
         "num_units": 2210}]}))
    text, srcs = per_hospital_epsilon(SimpleNamespace(run_dir=SimpleNamespace(privacy_file=path)))
    assert text.startswith("per-patient epsilon per hospital (delta 1e-05)")
    assert "hospital_a 0.997" in text and "hospital_b 1" in text and "812 patients" in text
    assert srcs == [path]
    path.write_text(json.dumps({"mode": "client", "epsilon": 1.0}))
    assert per_hospital_epsilon(SimpleNamespace(run_dir=SimpleNamespace(privacy_file=path))) == ("", [])
    missing = SimpleNamespace(run_dir=SimpleNamespace(privacy_file=tmp_path / "none.json"))
    assert per_hospital_epsilon(missing) == ("", [])
