"""The default report carries the real-data profiles' sections (issue 15) when their result files
exist next to it, and nothing when they do not."""

from __future__ import annotations

from paper_figures.report import _real_data_section


def test_real_data_sections_of_other_profiles_are_included(tmp_path):
    assert _real_data_section(tmp_path) == ""
    d = tmp_path / "runs_pneumoniamnist"
    d.mkdir()
    (d / "real_data.md").write_text("## Real data\n\n### PneumoniaMNIST\n\n| arm | AUC |\n|---|---|\n| federated | 0.9 |\n")
    text = _real_data_section(tmp_path)
    assert text.startswith("## Real data (other profiles)")
    assert "Source: `runs_pneumoniamnist/real_data.md`" in text
    assert "#### PneumoniaMNIST" in text and "| federated | 0.9 |" in text
    assert text.count("## Real data") == 1  # the file's own heading is dropped
