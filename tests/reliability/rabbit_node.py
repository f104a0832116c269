"""A private RabbitMQ node (own name, ports and data dir) that fault tests may restart or kill,
so the machine's shared broker is never disturbed."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
# One node per test session (pid): parallel runs on the machine must not share a node.
NODE = f"hsw-faults-{os.getpid()}@localhost"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def available() -> bool:
    return SERVER.exists() and CTL.exists() and shutil.which("openssl") is not None


def make_ca(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for localhost/127.0.0.1 signed by it: (ca, cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        directory / f"{name}-ca.key",
        directory / f"{name}-ca.pem",
        directory / f"{name}-server.key",
        directory / f"{name}-server.csr",
        directory / f"{name}-server.pem",
    )
    ext = directory / f"{name}-ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
        *("-subj", f"/CN={name} CA", "-keyout", str(ca_key), "-out", str(ca)),
    )
    run(
        *("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost"),
        *("-keyout", str(key), "-out", str(csr)),
    )
    run(
        *("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key)),
        *("-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert)),
    )
    return ca, cert, key


@dataclass
class RabbitNode:
    """`start()` once, then `ctl(...)`, `restart_app()`, `kill9()`; `stop()` at the end."""

    base: Path
    amqp_port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    mgmt_port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    ca_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.ca_file, cert, key = make_ca(self.base / "tls", "hsw-test")
        (self.base / "enabled_plugins").write_text(
            "[rabbitmq_consistent_hash_exchange,rabbitmq_management].\n"
        )
        (self.base / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.default = {self.amqp_port}",
                    f"listeners.ssl.default = {self.tls_port}",
                    f"ssl_options.cacertfile = {self.ca_file}",
                    f"ssl_options.certfile = {cert}",
                    f"ssl_options.keyfile = {key}",
                    "ssl_options.verify = verify_none",
                    "ssl_options.fail_if_no_peer_cert = false",
                    f"management.tcp.port = {self.mgmt_port}",
                    "management.tcp.ip = 127.0.0.1",
                    # The worker's ownership poll reads consumer state: keep it fresh.
                    "collect_statistics_interval = 1000",
                    "",
                ]
            )
        )

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.base),  # its own Erlang cookie, shared by the server and ctl
            "RABBITMQ_NODENAME": NODE,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "node.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
        }

    @property
    def mgmt_url(self) -> str:
        return f"http://127.0.0.1:{self.mgmt_port}"

    def amqp_url(self, vhost: str = "/", *, tls: bool = False) -> str:
        scheme, port = ("amqps", self.tls_port) if tls else ("amqp", self.amqp_port)
        host = "localhost" if tls else "127.0.0.1"
        return f"{scheme}://guest:guest@{host}:{port}/{quote(vhost, safe='')}"

    def ctl(self, *args: str, timeout: float = 60) -> str:
        result = subprocess.run(
            [str(CTL), "-n", NODE, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {result.stderr or result.stdout}")
        return result.stdout

    def start(self, timeout: float = 90) -> None:
        subprocess.run(
            [str(SERVER), "-detached"], env=self.env, check=True, capture_output=True, timeout=30
        )
        self.wait_up(timeout)

    def wait_up(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.ctl("await_startup", timeout=30)
                if self._mgmt_ok():
                    return
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"private RabbitMQ node did not come up; logs in {self.base / 'log'}")

    def _mgmt_ok(self) -> bool:
        request = urllib.request.Request(f"{self.mgmt_url}/api/overview")
        request.add_header("Authorization", "Basic " + b64encode(b"guest:guest").decode())
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def restart_app(self, down_s: float = 0.0) -> None:
        self.ctl("stop_app")
        time.sleep(down_s)
        self.ctl("start_app")
        self.wait_up()

    def os_pid(self) -> int:
        return int((self.base / "node.pid").read_text().strip())

    def kill9_and_restart(self, down_s: float = 0.0) -> None:
        pid = self.os_pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        try:
            self.ctl("stop", timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired):
            with contextlib.suppress(OSError, ValueError):
                os.kill(self.os_pid(), signal.SIGKILL)
