"""A private ``redis-server`` for tests: started on a free loopback port, never the shared
one on 6379, with its own directory (and a Unix socket in it).

Fault tests reuse it: :meth:`RedisServer.kill` is ``kill -9``, :meth:`RedisServer.restart`
starts again on the same port and directory (so an AOF file, if ``args`` turned it on, is
replayed).

:class:`RedisCluster` is a private three-master Redis Cluster (no replicas), made of such
servers and joined with ``redis-cli --cluster create``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import redis


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_port(taken: Sequence[int] = ()) -> int:
    """A free port whose cluster bus port (``port + 10000``) is free too; never 6379."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535 or port in (6379, *taken) or port + 10000 in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the server gets SIGKILL if the test process dies without stopping it."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class RedisServer:
    """One ``redis-server`` process. ``args`` are extra server options, e.g.
    ``["--appendonly", "yes", "--appendfsync", "always"]``; by default nothing is persisted.
    With ``tls``, the port speaks only TLS, with a self-signed certificate for 127.0.0.1
    (``cert``) made in the server's directory; :meth:`url` is then a ``rediss://`` URL that
    trusts it. With ``client_certs`` (implies ``tls``) there is a test CA instead (``ca``)
    that signs the server's certificate and a client certificate (``client_cert``,
    ``client_key``), and the server refuses clients without one (``--tls-auth-clients
    yes``); :meth:`url` and :meth:`client` present it."""

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        port: int | None = None,
        directory: Path | None = None,
        binary: str | None = None,
        tls: bool = False,
        client_certs: bool = False,
    ) -> None:
        # TONIQ_TEST_REDIS_SERVER runs the suite against another server build, e.g. Redis
        # 6.2 or valkey-server (scripts/test-redis-versions).
        found = (
            binary
            or os.environ.get("TONIQ_TEST_REDIS_SERVER")
            or shutil.which("redis-server")
            or "/usr/bin/redis-server"
        )
        if not Path(found).exists():
            raise RuntimeError(
                "redis-server is not installed (Debian: apt-get install redis-server)"
            )
        self.binary = found
        self.args = list(args)
        self.port = port or free_port()
        self._own_dir = directory is None
        self.dir = directory or Path(tempfile.mkdtemp(prefix="toniq-redis-"))
        self.socket_path = self.dir / "redis.sock"
        self.tls = tls or client_certs
        self.client_certs = client_certs
        self.cert = self.dir / "cert.pem"
        self.ca = self.dir / "ca.pem" if client_certs else self.cert
        self.client_cert = self.dir / "client.pem"
        self.client_key = self.dir / "client-key.pem"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0, **query: str) -> str:
        if self.tls:
            query = {"ssl_ca_certs": str(self.ca), **self._client_cert_query(), **query}
        extra = "&".join(f"{k}={v}" for k, v in query.items())
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/{db}" + (f"?{extra}" if extra else "")

    def unix_url(self, db: int = 0) -> str:
        return f"unix://{self.socket_path}?db={db}"

    def _client_cert_query(self) -> dict[str, str]:
        if not self.client_certs:
            return {}
        return {"ssl_certfile": str(self.client_cert), "ssl_keyfile": str(self.client_key)}

    def client(self, db: int = 0, **options: Any) -> redis.Redis:
        """A client as the default user (or ``username=``/``password=`` in ``options``)."""
        if self.tls:
            return redis.Redis(
                host="127.0.0.1",
                port=self.port,
                db=db,
                socket_timeout=5,
                ssl=True,
                ssl_ca_certs=str(self.ca),
                **self._client_cert_query(),
                **options,
            )
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=5, **options)

    def _make_ca_certs(self, key: Path) -> None:
        """A test CA, a server certificate for 127.0.0.1 and a client certificate."""

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True)

        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        ca_key = self.dir / "ca-key.pem"
        ca_subject = ["-subj", "/CN=toniq test CA"]
        openssl("req", "-x509", *ec, "-days", "1", *ca_subject, "-keyout", str(ca_key), "-out",
                str(self.ca))  # fmt: skip
        for name, subject, ext, out, out_key in (
            ("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1", self.cert, key),
            ("client", "/CN=toniq", "extendedKeyUsage=clientAuth", self.client_cert,
             self.client_key),
        ):  # fmt: skip
            csr, extfile = self.dir / f"{name}.csr", self.dir / f"{name}.ext"
            extfile.write_text(ext + "\n")
            openssl("req", *ec, "-subj", subject, "-keyout", str(out_key), "-out", str(csr))
            ca = ["-CA", str(self.ca), "-CAkey", str(ca_key), "-CAcreateserial"]
            openssl("x509", "-req", "-in", str(csr), *ca, "-days", "1", "-extfile", str(extfile),
                    "-out", str(out))  # fmt: skip

    def _tls_args(self) -> list[str]:
        key = self.dir / "key.pem"
        if self.client_certs and not self.cert.exists():
            self._make_ca_certs(key)
        elif not self.cert.exists():
            subprocess.run(
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                    "-keyout",
                    str(key),
                    "-out",
                    str(self.cert),
                ],
                check=True,
                capture_output=True,
            )
        return [
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(self.cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(self.ca),
            "--tls-auth-clients",
            "yes" if self.client_certs else "no",
        ]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.running:
            return self
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            *(
                ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
                if len(str(self.socket_path)) < 100  # the limit of a socket's path
                else []
            ),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.dir / "redis.log"),
            *(self._tls_args() if self.tls else []),
            *self.args,
        ]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        client = self.client()
        try:
            while True:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    log = self.dir / "redis.log"
                    raise RuntimeError(
                        f"redis-server exited with {self.process.returncode}: {err}"
                        + (log.read_text() if log.exists() else "")
                    )
                try:
                    if client.ping():
                        return self
                except redis.RedisError as exc:
                    if time.monotonic() > deadline:
                        self.kill()
                        raise RuntimeError(
                            f"redis-server did not answer on port {self.port}"
                        ) from exc
                    time.sleep(0.01)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down cleanly (SIGTERM: Redis writes its AOF/RDB if configured to)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reap()

    def kill(self) -> None:
        """``kill -9``: nothing is flushed beyond what the server already wrote."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self._reap()

    def restart(self) -> RedisServer:
        """Start again on the same port and directory (after :meth:`stop` or :meth:`kill`)."""
        self.stop()
        return self.start()

    def _reap(self) -> None:
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def cleanup(self) -> None:
        """Stop the server and delete its directory if this object made it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


class RedisCluster:
    """A private Redis Cluster: ``masters`` ``redis-server --cluster-enabled yes`` processes
    (no replicas, nothing persisted) on free loopback ports, each in a directory of its own
    under one temporary directory, joined by ``redis-cli --cluster create``. Like
    :class:`RedisServer`, the servers die with the test process."""

    def __init__(self, masters: int = 3, *, binary: str | None = None) -> None:
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        if not Path(cli).exists():
            raise RuntimeError("redis-cli is not installed (Debian: apt-get install redis-server)")
        self.cli = cli
        self.dir = Path(tempfile.mkdtemp(prefix="toniq-cluster-"))
        ports: list[int] = []
        for _ in range(masters):
            ports.append(free_cluster_port(ports))
        self.servers = [
            RedisServer(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(self.dir / str(port) / "nodes.conf"),
                    "--cluster-node-timeout",
                    "5000",
                ],
                port=port,
                directory=self.dir / str(port),
                binary=binary,
            )
            for port in ports
        ]

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    def url(self, **query: str) -> str:
        """A toniq URL for this cluster (through its first node: the others are found)."""
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"redis://127.0.0.1:{self.ports[0]}/0?cluster=yes{extra}"

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.ports[0], socket_timeout=5)

    def start(self, timeout: float = 30.0) -> RedisCluster:
        try:
            for server in self.servers:
                server.dir.mkdir(parents=True, exist_ok=True)
                server.start()
            addresses = [f"127.0.0.1:{port}" for port in self.ports]
            done = subprocess.run(
                [
                    self.cli,
                    "--cluster",
                    "create",
                    *addresses,
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                preexec_fn=_die_with_parent,
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"redis-cli --cluster create failed: {done.stdout.decode()}"
                    f"{done.stderr.decode()}"
                )
            self._wait_until_ok(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _wait_until_ok(self, timeout: float) -> None:
        """Until every node says ``cluster_state:ok`` and knows every other node."""
        deadline = time.monotonic() + timeout
        clients = [server.client() for server in self.servers]
        try:
            while True:
                infos = [client.cluster("INFO") for client in clients]
                if all(
                    info.get("cluster_state") == "ok"
                    and int(info.get("cluster_known_nodes", 0)) == len(clients)
                    and int(info.get("cluster_slots_ok", 0)) == 16384
                    for info in infos
                ):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cluster is not ok after {timeout}s: {infos}")
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()

    def flushall(self) -> None:
        """Empty every master (each node holds the keys of its own slots)."""
        for server in self.servers:
            if server.running:
                client = server.client()
                try:
                    client.flushall()
                finally:
                    client.close()

    def cleanup(self) -> None:
        """Stop every server and delete the cluster's directory."""
        for server in self.servers:
            server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
