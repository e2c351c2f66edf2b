"""A real HTTP proxy in front of an S3 endpoint (moto_server) whose faults a test controls.

The server under test talks to the proxy's port as its S3 endpoint. The proxy can

- go **down** (:meth:`S3Proxy.down`): its listening socket is closed and every open connection is
  cut, so clients get ``connection refused`` exactly as from a stopped endpoint; after the outage
  it listens again on the same port, and moto kept its buckets meanwhile;
- go down the moment a request matches a pattern (:meth:`S3Proxy.down_on`), to stop the endpoint at
  a chosen point of a job (the GET of its model while staging, the PUT of an artifact or a
  checkpoint); the matching request gets no answer;
- answer ``500``/``503`` to requests that match (:meth:`S3Proxy.fail_requests`), a given number of
  times or until told to stop.

Everything else is relayed to the endpoint unchanged, one request at a time per connection.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import IO
from urllib.parse import urlsplit

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
_REASONS = {
    500: ("Internal Server Error", "InternalError"),
    503: ("Service Unavailable", "ServiceUnavailable"),
}


@dataclass
class _Failing:
    pattern: re.Pattern[str]
    left: int | None  # None: every matching PUT
    status: int


@dataclass
class Outage:
    """When the proxy went down and came back (``time.monotonic()``; ``up`` is None while down)."""

    down: float
    up: float | None = None
    trigger: str = ""


@dataclass
class _State:
    listener: socket.socket | None = None
    clients: set[socket.socket] = field(default_factory=set)
    trigger: tuple[re.Pattern[str], float] | None = None
    failing: _Failing | None = None
    outages: list[Outage] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed: int = 0


class S3Proxy:
    """The proxy on ``127.0.0.1:<port>`` (fixed for its life) in front of ``upstream``."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self._state = _State()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    # -- controls -------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on the port (again)."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._state.listener = listener
            if self._state.outages and self._state.outages[-1].up is None:
                self._state.outages[-1].up = time.monotonic()
        threading.Thread(target=self._accept, args=(listener,), name="s3-proxy-accept", daemon=True).start()

    def stop(self, trigger: str = "") -> None:
        """Stop listening and cut every open connection: the endpoint is down."""
        with self._lock:
            listener, self._state.listener = self._state.listener, None
            clients, self._state.clients = self._state.clients, set()
            if listener is not None:
                self._state.outages.append(Outage(time.monotonic(), trigger=trigger))
        for sock in [*([listener] if listener else []), *clients]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def down(self, seconds: float, trigger: str = "") -> None:
        """Go down now and come back on the same port ``seconds`` later (on a timer thread)."""
        self.stop(trigger)
        timer = threading.Timer(seconds, self.start)
        timer.daemon = True
        timer.start()

    def down_on(self, pattern: str, seconds: float) -> None:
        """Go down for ``seconds`` when a request line (``METHOD /path?query``) first matches ``pattern``."""
        with self._lock:
            self._state.trigger = (re.compile(pattern), seconds)

    def fail_requests(self, pattern: str, count: int | None = None, status: int = 503) -> None:
        """Answer ``status`` to the next ``count`` requests whose request line (``METHOD /path?query``)
        matches ``pattern`` (``count`` None: every one until :meth:`heal`)."""
        with self._lock:
            self._state.failing = _Failing(re.compile(pattern), count, status)

    def heal(self) -> None:
        """No more injected PUT failures or armed triggers."""
        with self._lock:
            self._state.failing = None
            self._state.trigger = None

    @property
    def outages(self) -> list[Outage]:
        with self._lock:
            return list(self._state.outages)

    @property
    def failed(self) -> int:
        """Requests answered with an injected failure so far."""
        with self._lock:
            return self._state.failed

    def wait_outage_over(self, timeout: float) -> Outage:
        """Block until an outage happened and ended; the latest one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            outages = self.outages
            if outages and outages[-1].up is not None:
                return outages[-1]
            time.sleep(0.05)
        raise AssertionError(f"no outage ended within {timeout} s: {self.outages}")

    # -- relaying ------------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                if self._state.listener is not listener:
                    client.close()
                    return
                self._state.clients.add(client)
            threading.Thread(target=self._serve, args=(client,), name="s3-proxy-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            with client, client.makefile("rb") as reader:
                while self._relay_one(client, reader, upstream):
                    pass
        except OSError:
            pass
        finally:
            upstream.close()
            with self._lock:
                self._state.clients.discard(client)

    def _relay_one(
        self, client: socket.socket, reader: IO[bytes], upstream: http.client.HTTPConnection
    ) -> bool:
        line = reader.readline(65537)
        if not line.strip():
            return False
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers = _read_headers(reader)
        if any(k.lower() == "expect" and v.lower() == "100-continue" for k, v in headers):
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = _read_body(reader, headers)
        request = f"{method} {target}"
        status = self._fault(request)
        if status == 0:
            return False
        if status > 0:
            _send(client, status, [("Content-Type", "application/xml")], _error_body(status), head=False)
            return True
        upstream.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP | {"expect", "content-length"}:
                upstream.putheader(name, value)
        if body or method in ("PUT", "POST"):
            upstream.putheader("Content-Length", str(len(body)))
        upstream.endheaders(body or None)
        response = upstream.getresponse()
        data = response.read()
        kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
        _send(client, response.status, kept, data, head=method == "HEAD", reason=response.reason)
        return True

    def _fault(self, request: str) -> int:
        """0: go down (no answer); > 0: answer that status; < 0: relay."""
        with self._lock:
            self._state.requests.append(request)
            trigger = self._state.trigger
            if trigger is not None and trigger[0].search(request):
                self._state.trigger = None
            else:
                trigger = None
            failing = self._state.failing
            if failing is not None and failing.left != 0 and failing.pattern.search(request):
                self._state.failed += 1
                if failing.left is not None:
                    failing.left -= 1
                return failing.status
        if trigger is not None:
            self.down(trigger[1], trigger=request)
            return 0
        return -1


def _read_headers(reader: IO[bytes]) -> list[tuple[str, str]]:
    headers = []
    while True:
        line = reader.readline(65537).decode("latin-1")
        if line in ("\r\n", "\n", ""):
            return headers
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))


def _read_body(reader: IO[bytes], headers: list[tuple[str, str]]) -> bytes:
    values = {k.lower(): v for k, v in headers}
    if "chunked" in values.get("transfer-encoding", "").lower():
        chunks = []
        while size := int(reader.readline(1024).split(b";")[0].strip() or b"0", 16):
            chunks.append(reader.read(size))
            reader.readline(16)
        while reader.readline(65537).strip():  # trailers
            pass
        return b"".join(chunks)
    return reader.read(int(values.get("content-length", "0") or 0))


def _error_body(status: int) -> bytes:
    code = _REASONS.get(status, ("Error", "InternalError"))[1]
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>injected by the test's proxy</Message></Error>"
    ).encode()


def _send(
    client: socket.socket,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    head: bool,
    reason: str = "",
) -> None:
    reason = reason or _REASONS.get(status, ("Error", ""))[0]
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers if head or k.lower() != "content-length"]
    if not head:
        lines.append(f"Content-Length: {len(body)}")
    client.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body))
