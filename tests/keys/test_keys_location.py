"""Where the local keystore lives (issue 17.4): ``--keystore`` / ``keys.path``, else
``$BFDL_KEYSTORE``, else ``~/.local/share/bfdl-tff/keystore``; replica keys under
``<keystore>/ledger/<chain id>/`` (0700); ``bfdl keys`` bad input gives one line and exit 2."""

from __future__ import annotations

import http.server
import os
import stat
import threading
from pathlib import Path

import pytest

from bfdl_tff.cli import main
from bfdl_tff.config import KeysConfig
from bfdl_tff.keys import KeyStoreError, default_keystore_dir, keystore_dir, replica_keys_dir


def test_keystore_location_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BFDL_KEYSTORE")
    assert default_keystore_dir() == tmp_path / "home" / ".local" / "share" / "bfdl-tff" / "keystore"
    monkeypatch.setenv("BFDL_KEYSTORE", str(tmp_path / "env-ks"))
    assert keystore_dir(KeysConfig()) == tmp_path / "env-ks"
    assert keystore_dir(KeysConfig(path=str(tmp_path / "cfg-ks"))) == tmp_path / "cfg-ks"
    assert keystore_dir(KeysConfig(path=str(tmp_path / "cfg-ks")), override=tmp_path / "cli-ks") == tmp_path / "cli-ks"


def test_replica_keys_dir_is_private_and_per_chain(tmp_path):
    ks = keystore_dir(KeysConfig(path=str(tmp_path / "ks")))
    a = replica_keys_dir(ks, "bfdl-run-0123abcd")
    b = replica_keys_dir(ks, "bfdl-run-4567ef01")
    assert a == tmp_path / "ks" / "ledger" / "bfdl-run-0123abcd" and a != b
    for d in (tmp_path / "ks", tmp_path / "ks" / "ledger", a, b):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for bad in ("", "..", "a/b"):
        with pytest.raises(KeyStoreError, match="invalid chain id"):
            replica_keys_dir(ks, bad)


def test_cli_uses_the_default_keystore(capsys):
    ks = Path(os.environ["BFDL_KEYSTORE"])
    assert main(["keys", "init", "--institutions", "hospital-q,aggregator-q"]) == 0
    assert f"# local keystore {ks}" in capsys.readouterr().out
    assert (ks / "hospital-q.key").is_file() and stat.S_IMODE((ks / "hospital-q.key").stat().st_mode) == 0o600
    assert main(["keys", "list"]) == 0
    assert "hospital-q" in capsys.readouterr().out


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("bfdl: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("args,text", [
    (["keys", "list", "--keystore", "/nonexistent/bfdl-ks"], "does not exist"),
    (["keys", "init", "--institutions", "pharmacy"], "cannot infer the role"),
    (["keys", "init", "--institutions", "../etc"], "invalid institution name"),
    (["keys", "init", "--institutions", ","], "no institution name"),
])
def test_cli_bad_input_is_one_line(args, text, capsys):
    assert main(args) == 2
    assert text in _one_line_error(capsys)


def test_cli_keystore_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["keys", "list", "--keystore", str(f)]) == 2
    assert "not a directory" in _one_line_error(capsys)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a: object) -> None:
        pass


def test_cli_non_vault_http_server_is_one_line(tmp_path, capsys, monkeypatch):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        monkeypatch.setenv("BFDL_NONVAULT_TOKEN", "t")
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        for cmd in ("list", "init"):
            assert main(["keys", cmd, "--backend", "vault", "--vault-url", url,
                         "--vault-token-env", "BFDL_NONVAULT_TOKEN"]) == 2
            err = _one_line_error(capsys)
            assert "not a Vault/OpenBao server" in err and "<html" not in err.lower()
    finally:
        srv.shutdown()
        srv.server_close()
        t.join()
