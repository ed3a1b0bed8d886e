"""``bfdl models list`` / ``bfdl models show`` (in-process)."""

from __future__ import annotations

import json

from bfdl_tff import cli


def test_models_list_and_show(capsys):
    assert cli.main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"small_cnn", "resnet_unet_small", "resnet50", "resnet50_unet"}

    assert cli.main(["models", "show", "resnet_unet_small", "--input-size", "32", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["input_shape"] == [None, 32, 32, 1]
    assert info["outputs"] == {"findings": [None, 14], "lesion": [None, 32, 32, 1]}
    assert info["parameters"] == info["trainable_parameters"] > 0

    assert cli.main(["models", "show", "small_cnn", "--set", "width=4"]) == 0
    out = capsys.readouterr().out
    assert "trainable parameters:" in out and "[None, 14]" in out


def test_models_show_bad_name_and_key_exit_2(capsys):
    assert cli.main(["models", "show", "no_such_model"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'no_such_model'" in err and "small_cnn" in err
    assert cli.main(["models", "show", "small_cnn", "--set", "widht=4"]) == 2
    assert "widht: unknown key" in capsys.readouterr().err
