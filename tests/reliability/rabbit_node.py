"""Private RabbitMQ 4 nodes (own names, ports and data dirs) that fault tests may restart or
kill, so the suite's shared node is never disturbed. They run from the Debian 13 root that
`scripts/rabbitmq4.sh` builds, as root inside it; every path they are given is inside the root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[2]
ROOT = Path(os.environ.get("RABBITMQ4_ROOT", "/var/lib/heygen-streaming-worker/rabbitmq4-root"))
BIN = Path("/usr/lib/rabbitmq/bin")


def ensure_root() -> None:
    """Build the root if this machine has none yet (the script is idempotent)."""
    subprocess.run([str(REPO / "scripts" / "rabbitmq4.sh"), "root"], check=True, timeout=900)


def node_dir(prefix: str) -> Path:
    """A fresh directory inside the root for a node's files."""
    (ROOT / "tmp").mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=ROOT / "tmp"))


def inside(path: Path) -> str:
    """`path` as the node sees it, from inside the root."""
    return "/" + str(path.relative_to(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def available() -> bool:
    return shutil.which("openssl") is not None and shutil.which("chroot") is not None


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

    base: Path  # inside ROOT (node_dir)
    name: str = field(default_factory=lambda: f"hsw-faults-{os.getpid()}")
    # The Erlang cookie's folder: nodes of one cluster share it.
    home: Path | None = None
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
                    f"ssl_options.cacertfile = {inside(self.ca_file)}",
                    f"ssl_options.certfile = {inside(cert)}",
                    f"ssl_options.keyfile = {inside(key)}",
                    "ssl_options.verify = verify_none",
                    "ssl_options.fail_if_no_peer_cert = false",
                    f"management.tcp.port = {self.mgmt_port}",
                    "management.tcp.ip = 127.0.0.1",
                    # The worker's ownership poll reads consumer state: keep it fresh.
                    "collect_statistics_interval = 1000",
                    # RabbitMQ 4.3's defaults, as on the suite's shared node.
                    "deprecated_features.permit.transient_nonexcl_queues = false",
                    "deprecated_features.permit.global_qos = false",
                    "loopback_users = none",
                    "",
                ]
            )
        )

    @property
    def node(self) -> str:
        return f"{self.name}@localhost"

    @property
    def env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": inside(self.home or self.base),  # the Erlang cookie of the server and ctl
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": inside(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": inside(self.base / "log"),
            "RABBITMQ_PID_FILE": inside(self.base / "node.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": inside(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": inside(self.base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": inside(self.base / "advanced.config"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _in_root(self, program: str, *args: str) -> list[str]:
        return ["chroot", str(ROOT), str(BIN / program), *args]

    @property
    def mgmt_url(self) -> str:
        return f"http://127.0.0.1:{self.mgmt_port}"

    def amqp_url(self, vhost: str = "/", *, tls: bool = False) -> str:
        scheme, port = ("amqps", self.tls_port) if tls else ("amqp", self.amqp_port)
        host = "localhost" if tls else "127.0.0.1"
        return f"{scheme}://guest:guest@{host}:{port}/{quote(vhost, safe='')}"

    def ctl(self, *args: str, timeout: float = 60) -> str:
        result = subprocess.run(
            self._in_root("rabbitmqctl", "-n", self.node, *args),
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
            self._in_root("rabbitmq-server", "-detached"),
            env=self.env,
            check=True,
            capture_output=True,
            timeout=30,
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
