"""Real etcd servers for tests and demos: one member or a cluster, on loopback.

``EtcdCluster(size)`` starts ``size`` etcd processes (the ``etcd`` binary:
``$FTMAP_ETCD``, else ``etcd`` on PATH, else ``/usr/bin/etcd``; the project's
``ci/etcd-server`` installs Debian's etcd-server when it is missing) on free
loopback ports with a temporary data directory each, waits until every member
knows its leader and a linearizable read succeeds, and stops them all (SIGTERM,
then SIGKILL) on ``stop()`` or at the end of a ``with`` block. A member can be
killed, stopped, paused (SIGSTOP: a hung server) and restarted on its own ports
and data. ``tls=True`` makes a certificate authority, server and client
certificates with the ``openssl`` command and serves the client port over TLS
with client certificates required (``cluster.tls`` has the file names).

No mock anywhere: these are etcd's own processes; nothing here talks to anything
but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._etcd_client import EtcdClient, EtcdError

__all__ = ["EtcdCluster", "EtcdMember", "EtcdNotFoundError", "TLSFiles", "find_etcd", "make_tls_files"]


class EtcdNotFoundError(RuntimeError):
    """No etcd binary: install one (ci/etcd-server) or set FTMAP_ETCD."""


def find_etcd() -> str:
    """The etcd binary to run (see the module docstring); EtcdNotFoundError if there is none."""
    explicit = os.environ.get("FTMAP_ETCD")
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit
        raise EtcdNotFoundError(f"FTMAP_ETCD={explicit} is not an executable etcd")
    for candidate in (shutil.which("etcd"), "/usr/bin/etcd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise EtcdNotFoundError(
        "no etcd server binary found: run ci/etcd-server (installs Debian's etcd-server; "
        "`make etcd` does it) or set FTMAP_ETCD to an etcd 3.4+ binary"
    )


def _free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (all held open together, so they are distinct)."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            held.append(sock)
        return [s.getsockname()[1] for s in held]
    finally:
        for sock in held:
            sock.close()


@dataclass(frozen=True)
class TLSFiles:
    """A certificate authority, and server and client certificates it signed (PEM files)."""

    ca_file: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def make_tls_files(directory: str | os.PathLike[str]) -> TLSFiles:
    """Make a CA, a server certificate for 127.0.0.1/localhost and a client certificate, with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise EtcdNotFoundError(
            "the openssl command is needed to make test certificates (apt-get install openssl)"
        )
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        done = subprocess.run(
            [openssl, *args], cwd=out, capture_output=True, text=True, check=False, timeout=60
        )
        if done.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stderr.strip()}")

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    # Extensions as Python 3.13's default context (VERIFY_X509_STRICT) requires them.
    run(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=ftmap test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    )  # fmt: skip
    leaf = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nauthorityKeyIdentifier=keyid\n"
    for name, extensions in (
        (
            "server",
            leaf + "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        ),
        ("client", leaf + "extendedKeyUsage=clientAuth\n"),
    ):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=ftmap test {name}")
        (out / f"{name}.ext").write_text(extensions)
        run(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
        )  # fmt: skip
    return TLSFiles(
        ca_file=str(out / "ca.crt"),
        server_cert=str(out / "server.crt"),
        server_key=str(out / "server.key"),
        client_cert=str(out / "client.crt"),
        client_key=str(out / "client.key"),
    )


class EtcdMember:
    """One etcd process of an EtcdCluster: its ports, data directory, log and process."""

    def __init__(self, cluster: EtcdCluster, name: str, client_port: int, peer_port: int) -> None:
        self.cluster = cluster
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = cluster.base_dir / name
        self.log_path = cluster.base_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        scheme = "https" if self.cluster.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _command(self) -> list[str]:
        cluster = self.cluster
        args = [
            cluster.etcd,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", ",".join(f"{m.name}={m.peer_url}" for m in cluster.members),
            "--initial-cluster-state", "new",
            "--initial-cluster-token", cluster.token,
            "--heartbeat-interval", str(cluster.heartbeat_ms),
            "--election-timeout", str(cluster.election_ms),
            "--logger", "zap",
            "--log-level", "warn",
            "--enable-v2=false",
        ]  # fmt: skip
        if cluster.tls is not None:
            args += [
                "--cert-file", cluster.tls.server_cert,
                "--key-file", cluster.tls.server_key,
                "--trusted-ca-file", cluster.tls.ca_file,
                "--client-cert-auth",
            ]  # fmt: skip
        return args + list(cluster.extra_args)

    def start(self) -> None:
        """Start the process (on its ports, with its data directory); returns at once."""
        if self.running:
            return
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')} ---\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within timeout; waits for it."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        self.resume()  # a paused process cannot act on SIGTERM
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def kill(self) -> None:
        """SIGKILL: the member dies at once, as in a crash."""
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    def pause(self, timeout: float = 10.0) -> None:
        """SIGSTOP: the member stops answering but keeps its connections open (a hung server).

        Returns once every thread of the process is stopped (on Linux, read from /proc): the
        signal only starts the stop, and on a busy machine etcd's threads went on serving
        requests sent after kill() had returned (a "hung" member answered a range read).
        """
        if self.running and self.process is not None:
            self.process.send_signal(signal.SIGSTOP)
            self._wait_until(stopped=True, timeout=timeout)

    def resume(self, timeout: float = 10.0) -> None:
        """SIGCONT after pause(); returns once no thread of the process is stopped (on Linux)."""
        if self.running and self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self._wait_until(stopped=False, timeout=timeout)

    def _wait_until(self, *, stopped: bool, timeout: float) -> None:
        """Poll /proc until every thread is stopped (or none is); nothing to poll elsewhere."""
        assert self.process is not None
        tasks = Path(f"/proc/{self.process.pid}/task")
        if not tasks.is_dir():
            return
        deadline = time.monotonic() + timeout
        while True:
            states = _thread_states(tasks)
            if (states == {"T"}) if stopped else ("T" not in states):
                return
            if self.process.poll() is not None:
                return  # it exited: nothing left to stop or resume
            if time.monotonic() > deadline:
                done = "stopped" if stopped else "resumed"
                raise RuntimeError(f"etcd member {self.name} not {done} after {timeout} s: {states}")
            time.sleep(0.001)

    def restart(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        """Stop (if running) and start again on the same ports and data; waits until it is healthy."""
        self.stop()
        self.start()
        if wait:
            self.cluster.wait_healthy([self], timeout=timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EtcdMember({self.name}, {self.client_url}, {state})"


def _thread_states(tasks: Path) -> set[str]:
    """The scheduler states of a process's threads (/proc/PID/task/*/stat: "R", "S", "T", ...)."""
    states = set()
    for task in tasks.iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        states.add(stat[stat.rindex(")") + 2])  # after "pid (comm) ": comm may hold spaces
    return states


class EtcdCluster:
    """``size`` real etcd members on loopback: see the module docstring.

    ``client(**options)`` makes an EtcdClient for every member's endpoint (plus
    the TLS files when ``tls=True``); ``endpoints`` lists them. The data
    directories live under ``base_dir`` (default: a new directory in /dev/shm
    when it is writable, else the system's temporary directory), removed on
    ``stop()``.
    """

    _tokens = itertools.count(1)

    def __init__(
        self,
        size: int = 1,
        *,
        tls: bool = False,
        base_dir: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        startup_timeout: float = 30.0,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one member")
        self.etcd = find_etcd()
        parent = base_dir
        if parent is None and os.access("/dev/shm", os.W_OK):
            parent = "/dev/shm"
        self.base_dir = Path(tempfile.mkdtemp(prefix="ftmap-etcd-", dir=parent))
        self._owns_dir = True
        self.size = size
        self.extra_args = tuple(extra_args)
        self.heartbeat_ms, self.election_ms = heartbeat_ms, election_ms
        self.startup_timeout = startup_timeout
        self.token = f"ftmap-{os.getpid()}-{next(self._tokens)}-{uuid.uuid4().hex[:8]}"
        self.tls: TLSFiles | None = make_tls_files(self.base_dir / "tls") if tls else None
        self.members: list[EtcdMember] = []
        self.credentials: tuple[str, str] | None = None  # set by enable_auth; used by the health checks

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> EtcdCluster:
        """Start every member and wait until the cluster is healthy (retried on a port clash)."""
        for attempt in range(3):
            ports = _free_ports(2 * self.size)
            self.members = [
                EtcdMember(self, f"m{i}", ports[2 * i], ports[2 * i + 1]) for i in range(self.size)
            ]
            for member in self.members:
                member.start()
            try:
                self.wait_healthy(timeout=self.startup_timeout)
                return self
            except RuntimeError as error:
                clash = any("address already in use" in m.log_tail(50) for m in self.members)
                self._stop_members()
                for member in self.members:
                    shutil.rmtree(member.data_dir, ignore_errors=True)
                if not clash or attempt == 2:
                    self.stop()
                    raise RuntimeError(f"etcd cluster of {self.size} did not start: {error}") from error
        raise AssertionError("unreachable")

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _stop_members(self, grace: float = 1.0) -> None:
        # SIGTERM to all at once, SIGKILL after ``grace``: members stopping together wait on each
        # other (a stopping leader tries to hand its leadership over), and the data is thrown away.
        for member in self.members:
            if member.running and member.process is not None:
                member.resume()
                member.process.terminate()
        deadline = time.monotonic() + grace
        for member in self.members:
            member.stop(max(0.01, deadline - time.monotonic()))

    def stop(self) -> None:
        """Stop every member (SIGTERM, then SIGKILL after a second) and remove the data directories."""
        self._stop_members()
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- clients and health ------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def tls_options(self) -> dict[str, Any]:
        """The EtcdClient TLS keyword arguments for this cluster (empty without TLS)."""
        if self.tls is None:
            return {}
        return {
            "ca_file": self.tls.ca_file,
            "cert_file": self.tls.client_cert,
            "key_file": self.tls.client_key,
        }

    def client(self, members: Sequence[EtcdMember] | None = None, **options: Any) -> EtcdClient:
        """An EtcdClient for these members (default: all), with the cluster's TLS files."""
        chosen = self.members if members is None else members
        return EtcdClient([m.client_url for m in chosen], **{**self.tls_options(), **options})

    def wait_healthy(self, members: Sequence[EtcdMember] | None = None, *, timeout: float = 30.0) -> None:
        """Wait until each member runs, knows a leader, and serves a linearizable read."""
        chosen = list(self.members if members is None else members)
        deadline = time.monotonic() + timeout
        pending = list(chosen)
        last: dict[str, str] = {}
        while pending:
            member = pending[0]
            if not member.running:
                raise RuntimeError(f"etcd member {member.name} exited:\n{member.log_tail()}")
            try:
                auth = (
                    {"username": self.credentials[0], "password": self.credentials[1]}
                    if self.credentials
                    else {}
                )
                with self.client([member], timeout=1.0, **auth) as client:
                    status = client.status(member.client_url)
                    if status.leader:
                        client.range("ftmap-health-check", timeout=1.0)
                        pending.pop(0)
                        continue
                    last[member.name] = "no leader yet"
            except (EtcdError, OSError) as error:
                if "TLS verification failed" in str(error):
                    raise RuntimeError(f"etcd member {member.name}: {error}") from error
                last[member.name] = f"{type(error).__name__}: {error}"
            if time.monotonic() > deadline:
                logs = "\n".join(f"[{m.name}] {m.log_tail(10)}" for m in pending)
                raise RuntimeError(f"etcd not healthy after {timeout} s ({last}):\n{logs}")
            time.sleep(0.05)

    def leader(self, *, timeout: float = 15.0) -> EtcdMember:
        """The member that is the leader now (waits for an election if there is none)."""
        deadline = time.monotonic() + timeout
        while True:
            ids: dict[int, EtcdMember] = {}
            leaders: set[int] = set()
            for member in self.members:
                if not member.running:
                    continue
                try:
                    with self.client([member], timeout=1.0) as client:
                        status = client.status(member.client_url)
                except (EtcdError, OSError):
                    continue
                ids[status.member_id] = member
                if status.leader:
                    leaders.add(status.leader)
            if len(leaders) == 1 and (leader := next(iter(leaders))) in ids:
                return ids[leader]
            if time.monotonic() > deadline:
                raise RuntimeError(f"no single leader among the running members after {timeout} s")
            time.sleep(0.05)

    def member_for(self, endpoint: str) -> EtcdMember:
        for member in self.members:
            if member.client_url == endpoint:
                return member
        raise KeyError(endpoint)

    @contextlib.contextmanager
    def stopped(self, member: EtcdMember) -> Iterator[EtcdMember]:
        """Within the block the member is stopped (SIGTERM); restarted and healthy after it."""
        member.stop()
        try:
            yield member
        finally:
            member.restart()

    def enable_auth(self, user: str, password: str) -> None:
        """Create ``user`` with the root role and turn authentication on."""
        with self.client() as client:
            client.call("/v3/auth/user/add", {"name": user, "password": password})
            client.call("/v3/auth/role/add", {"name": "root"})
            client.call("/v3/auth/user/grant", {"user": user, "role": "root"})
            client.call("/v3/auth/enable", {})
        self.credentials = (user, password)
