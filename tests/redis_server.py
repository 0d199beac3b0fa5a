"""A private ``redis-server`` for tests: started on a free loopback port, never the shared
one on 6379, with its own directory (and a Unix socket in it).

Fault tests reuse it: :meth:`RedisServer.kill` is ``kill -9``, :meth:`RedisServer.restart`
starts again on the same port and directory (so an AOF file, if ``args`` turned it on, is
replayed).
"""

from __future__ import annotations

import contextlib
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

import redis


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    trusts it."""

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        port: int | None = None,
        directory: Path | None = None,
        binary: str | None = None,
        tls: bool = False,
    ) -> None:
        found = binary or shutil.which("redis-server") or "/usr/bin/redis-server"
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
        self.tls = tls
        self.cert = self.dir / "cert.pem"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0, **query: str) -> str:
        if self.tls:
            query = {"ssl_ca_certs": str(self.cert), **query}
        extra = "&".join(f"{k}={v}" for k, v in query.items())
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/{db}" + (f"?{extra}" if extra else "")

    def unix_url(self, db: int = 0) -> str:
        return f"unix://{self.socket_path}?db={db}"

    def client(self, db: int = 0) -> redis.Redis:
        if self.tls:
            return redis.Redis(
                host="127.0.0.1",
                port=self.port,
                db=db,
                socket_timeout=5,
                ssl=True,
                ssl_ca_certs=str(self.cert),
            )
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=5)

    def _tls_args(self) -> list[str]:
        key = self.dir / "key.pem"
        if not self.cert.exists():
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
            str(self.cert),
            "--tls-auth-clients",
            "no",
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
