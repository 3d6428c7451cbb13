"""A loopback TCP proxy the chaos tests control: it forwards to one upstream, and can add delay to every chunk,
drop a share of connections, or go down (close every connection, refuse new ones) and come back."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from types import TracebackType

from k2.kafka.broker import free_port

LOOPBACK = "127.0.0.1"


class Proxy:
    def __init__(self, upstream_port: int, port: int | None = None) -> None:
        self.port = port or free_port()
        self._upstream = upstream_port
        self.delay = 0.0  # seconds added before each forwarded chunk, both ways
        self.drop = 0.0  # share of new connections cut at once
        self.cut = 0  # connections cut by down() or refused by `drop`, so far
        self._up = threading.Event()
        self._up.set()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stopped = False
        self._listener = socket.create_server((LOOPBACK, self.port), reuse_port=False)
        self._listener.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def down(self) -> None:
        """Every open connection is cut; new ones are closed as soon as they are accepted."""
        self._up.clear()
        with self._lock:
            self.cut += len(self._open) // 2
            for connection in self._open:
                _close(connection)
            self._open.clear()

    def up(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._stopped = True
        self.down()
        self._listener.close()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            if not self._up.is_set() or random.random() < self.drop:
                self.cut += 1
                _close(client)
                continue
            try:
                upstream = socket.create_connection((LOOPBACK, self._upstream), timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while self._up.is_set():
                chunk = source.recv(65536)
                if not chunk:
                    break
                if self.delay:
                    time.sleep(self.delay)
                target.sendall(chunk)
        for connection in (source, target):
            _close(connection)
        with self._lock:
            self._open.discard(source)
            self._open.discard(target)


def _close(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()
