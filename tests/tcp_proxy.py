"""A TCP proxy that can freeze: bytes stop moving both ways, a hung peer, until it thaws."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


class FreezingProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream``; while frozen, holds what it received instead."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._thawed = threading.Event()
        self._thawed.set()
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        self._thawed.clear()

    def thaw(self) -> None:
        self._thawed.set()

    def close(self) -> None:
        self._closed.set()
        self._thawed.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                self._thawed.wait()
                if self._closed.is_set():
                    break
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def freezing_proxy(upstream: tuple[str, int]) -> Iterator[FreezingProxy]:
    proxy = FreezingProxy(upstream)
    try:
        yield proxy
    finally:
        proxy.close()
