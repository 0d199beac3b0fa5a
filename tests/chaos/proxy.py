"""A small TCP proxy for network faults between toniq's processes and Redis.

Threads, not asyncio: the test drives it from synchronous code while it runs. Each accepted
connection gets an upstream connection and two pump threads (one per direction). The test
switches faults on and off:

- :meth:`Proxy.reset`: every open connection is closed with a TCP RST on both sides (as a
  NAT or firewall that forgot the connection, or a restarted load balancer);
- :meth:`Proxy.latency`: every chunk waits this long before it is forwarded;
- :meth:`Proxy.black_hole`: nothing moves in either direction and new connections are not
  served, while every socket stays open; :meth:`Proxy.heal` lets through what waited, as TCP
  retransmission does once a partition ends. A command sent into the hole therefore reaches
  Redis late, after its client gave up on the reply: exactly what makes "ghost" claims.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from types import TracebackType

#: How often a pump looks at the switches while it has nothing to forward.
TICK = 0.02


class Proxy:
    """Listens on 127.0.0.1:``port`` (a free one) and forwards to ``upstream``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._eof: set[socket.socket] = set()  # sources that reached their end
        self._delay = 0.0
        self._open = threading.Event()  # cleared: black hole
        self._open.set()
        self._closed = False
        self.accepted = 0
        self.resets = 0
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept_loop, "proxy-accept")

    def url(self, **query: str) -> str:
        extra = "&".join(f"{k}={v}" for k, v in query.items())
        return f"redis://127.0.0.1:{self.port}/0" + (f"?{extra}" if extra else "")

    # -- faults -------------------------------------------------------------------------------

    def reset(self) -> int:
        """Close every open connection with an RST on both sides; how many it closed."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                _abort(sock)
        self.resets += len(pairs)
        return len(pairs)

    def latency(self, seconds: float) -> None:
        """Delay every forwarded chunk by ``seconds`` (0: none)."""
        self._delay = seconds

    def black_hole(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        """End the black hole and the latency."""
        self._delay = 0.0
        self._open.set()

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    # -- the machinery ------------------------------------------------------------------------

    def _spawn(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        self._listener.settimeout(TICK * 5)
        while not self._closed:
            if not self._open.wait(TICK * 5):
                continue  # the black hole: connections wait in the listen backlog
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _abort(client)  # Redis is down: the client sees its connection refused
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(None)
            with self._lock:
                self._pairs.append((client, server))
            self.accepted += 1
            self._spawn(self._pump, "proxy-up", client, server)
            self._spawn(self._pump, "proxy-down", server, client)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        # On EOF the other direction goes on (a reply may still come back); the pair is
        # closed once both directions ended, or at once on an error.
        half_closed = False
        try:
            while not self._closed:
                self._open.wait()
                readable, _, _ = select.select([source], [], [], TICK)
                if not readable:
                    continue
                if not self._open.is_set():
                    continue  # the hole opened while we waited: leave the bytes in the socket
                data = source.recv(65536)
                if not data:
                    with contextlib.suppress(OSError):
                        target.shutdown(socket.SHUT_WR)
                    with self._lock:
                        half_closed = target not in self._eof
                        self._eof.add(source)
                    return
                delay = self._delay
                if delay:
                    time.sleep(delay)
                self._open.wait()
                target.sendall(data)
        except (OSError, ValueError):  # reset, or closed by the other pump
            pass
        finally:
            if not half_closed:
                self._drop(source, target)

    def _drop(self, a: socket.socket, b: socket.socket) -> None:
        with self._lock:
            self._pairs = [p for p in self._pairs if a not in p and b not in p]
            self._eof -= {a, b}
        for sock in (a, b):
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self._closed = True
        self._open.set()
        self._listener.close()
        self.reset()
        for thread in self._threads:
            thread.join(2)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _abort(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0) rather than a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
