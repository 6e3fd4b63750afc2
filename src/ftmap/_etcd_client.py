"""An etcd v3 client over etcd's HTTP/JSON gateway, with the standard library only.

etcd serves its gRPC API as JSON under ``/v3/`` on the client port (3.4 and
later; 3.3 used ``/v3beta/``). This client speaks that gateway with plain
sockets: one HTTP/1.1 exchange per connection (``Connection: close``), so
that every request has its own socket, its own total deadline and can be
aborted from another thread. The requests it makes (and the only ones it
needs) are ``kv/range``, ``kv/put``, ``kv/deleterange``, ``kv/txn``,
``kv/compaction``, ``watch`` (a streamed response of newline-separated JSON
messages), ``auth/authenticate``, ``maintenance/status`` and
``cluster/member/list``; ``call`` reaches any other.

Why not a library: python-etcd3 is gRPC-based and unmaintained since 2020;
grpcio publishes no free-threaded (cp313t) wheel, so it would need a C++
build from source and might turn the GIL back on; etcd3gw needs requests and
cannot abort a blocked watch from another thread. The gateway is etcd's own,
documented, and enough for everything here.

Guarantees:

- **Timeouts everywhere.** ``timeout`` bounds each attempt of a request on
  one endpoint as a whole (connect, TLS handshake, send, the complete
  response), not each socket read, so a server that trickles bytes cannot
  hold a request longer; a request that fails over tries each endpoint
  once, so it takes at most ``timeout`` times the number of endpoints.
  ``connect_timeout`` bounds the TCP connect and handshake alone.
- **Failover.** Requests go to the endpoint that last answered; when it
  cannot be reached, times out, or answers "unavailable" (no leader, the
  member is stopping, a request timed out inside etcd), the next endpoint is
  tried, each once per call; EtcdUnavailableError if none answered. Writes
  (put, delete, txn, compaction) move on only when the request certainly
  was not applied (the connection was never made, or etcd said "no
  leader"); otherwise they raise EtcdUnavailableError with
  ``maybe_applied=True``: retrying a write that may have been applied is
  the caller's decision (use a txn with a compare to make it safe).
- **Abortable.** ``close()`` (from any thread) shuts down every connection
  in flight, so a thread blocked in a request or a watch returns at once
  with EtcdClosedError.
- **Authentication.** With ``username``/``password`` the client gets a token
  from ``auth/authenticate`` and sends it in the ``Authorization`` header;
  when etcd says the token is invalid (expired, or the member restarted and
  forgot it) it authenticates again and retries once.
- **TLS.** ``https://`` endpoints (or any TLS option) use TLS with
  ``ca_file`` (else the system's CAs), an optional client certificate
  (``cert_file``/``key_file``), hostname and certificate verification on
  unless ``verify=False``; or pass a ready ``ssl_context``.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = [
    "DeleteResult",
    "EtcdAuthError",
    "EtcdClient",
    "EtcdClosedError",
    "EtcdCompactedError",
    "EtcdError",
    "EtcdUnavailableError",
    "EtcdWatch",
    "Event",
    "KeyValue",
    "Member",
    "MemberStatus",
    "RangeResult",
    "TxnResult",
    "WatchResponse",
    "compare",
    "op_delete",
    "op_put",
    "op_range",
    "prefix_range_end",
]

# gRPC status codes that etcd returns in the gateway's JSON errors.
_INVALID_ARGUMENT = 3
_DEADLINE_EXCEEDED = 4
_PERMISSION_DENIED = 7
_OUT_OF_RANGE = 11
_UNAVAILABLE = 14
_UNAUTHENTICATED = 16
_RETRY_ELSEWHERE = {_DEADLINE_EXCEEDED, _UNAVAILABLE}
_MAX_HEAD = 64 * 1024  # bytes of status line and headers accepted
_MAX_BODY = 512 * 1024 * 1024  # a unary response larger than this is refused
_MAX_MESSAGE = 256 * 1024 * 1024  # one watch message larger than this is refused


# -- errors ------------------------------------------------------------------------


class EtcdError(Exception):
    """etcd refused a request, or the gateway answered something unexpected.

    ``code`` is etcd's gRPC status code (None if there was none), ``status``
    the HTTP status (None if no response), ``endpoint`` the member asked.
    """

    def __init__(
        self, message: str, *, code: int | None = None, status: int | None = None, endpoint: str | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.status, self.endpoint = code, status, endpoint


class EtcdUnavailableError(EtcdError):
    """No endpoint answered in time (connection refused or reset, timed out, no leader).

    ``errors`` lists what each endpoint tried said. ``maybe_applied`` is True
    for a write whose request was sent but whose answer never came.
    """

    def __init__(
        self,
        message: str,
        *,
        errors: Sequence[BaseException] = (),
        maybe_applied: bool = False,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message, code=_UNAVAILABLE, endpoint=endpoint)
        self.errors = list(errors)
        self.maybe_applied = maybe_applied


class EtcdCompactedError(EtcdError):
    """The revision asked for has been compacted away; ``compact_revision`` is the oldest kept."""

    def __init__(self, message: str, *, compact_revision: int, endpoint: str | None = None) -> None:
        super().__init__(message, code=_OUT_OF_RANGE, endpoint=endpoint)
        self.compact_revision = compact_revision


class EtcdAuthError(EtcdError):
    """Authentication failed, or the user may not do this (wrong password, permission denied)."""


class EtcdClosedError(EtcdError):
    """The client (or the watch) was closed while the request was in flight."""


# -- results -----------------------------------------------------------------------


@dataclass(frozen=True)
class KeyValue:
    """One key as etcd stores it (``value`` is empty for a delete event)."""

    key: bytes
    value: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyValue:
        return cls(
            key=_b64decode(data.get("key", "")),
            value=_b64decode(data.get("value", "")),
            create_revision=int(data.get("create_revision", 0)),
            mod_revision=int(data.get("mod_revision", 0)),
            version=int(data.get("version", 0)),
            lease=int(data.get("lease", 0)),
        )


@dataclass(frozen=True)
class Event:
    """A watch event: ``type`` "PUT" or "DELETE"; ``kv.mod_revision`` is the revision of the change."""

    type: Literal["PUT", "DELETE"]
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        kind = data.get("type", "PUT")
        if kind not in ("PUT", "DELETE"):
            raise EtcdError(f"unknown watch event type {kind!r}")
        prev = data.get("prev_kv")
        return cls(kind, KeyValue.from_json(data.get("kv", {})), KeyValue.from_json(prev) if prev else None)


@dataclass(frozen=True)
class RangeResult:
    """A range read: the keys (sorted by key) as of ``revision``."""

    kvs: tuple[KeyValue, ...]
    revision: int
    count: int
    more: bool
    member_id: int = 0


@dataclass(frozen=True)
class DeleteResult:
    deleted: int
    revision: int


@dataclass(frozen=True)
class TxnResult:
    """``succeeded``: the compares held (the success ops ran); ``revision``: the store's after it."""

    succeeded: bool
    revision: int
    responses: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class MemberStatus:
    """``maintenance/status`` of one member."""

    endpoint: str
    member_id: int
    leader: int
    revision: int
    raft_term: int
    raft_index: int
    version: str
    db_size: int
    errors: tuple[str, ...] = ()

    @property
    def is_leader(self) -> bool:
        return self.member_id != 0 and self.member_id == self.leader


@dataclass(frozen=True)
class Member:
    member_id: int
    name: str
    client_urls: tuple[str, ...]
    peer_urls: tuple[str, ...]
    is_learner: bool = False


@dataclass(frozen=True)
class WatchResponse:
    """One message of a watch stream.

    ``revision`` is the header's (the member's store revision when it was
    sent), not the events' own revisions (``event.revision``). A message with
    no events that is neither ``created`` nor ``canceled`` is a progress
    notification.
    """

    revision: int
    events: tuple[Event, ...] = ()
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""
    fragment: bool = False
    watch_id: int = 0
    member_id: int = 0

    @property
    def is_progress(self) -> bool:
        return not (self.events or self.created or self.canceled)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WatchResponse:
        header = data.get("header", {})
        return cls(
            revision=int(header.get("revision", 0)),
            events=tuple(Event.from_json(e) for e in data.get("events", ())),
            created=bool(data.get("created", False)),
            canceled=bool(data.get("canceled", False)),
            compact_revision=int(data.get("compact_revision", 0)),
            cancel_reason=str(data.get("cancel_reason", "")),
            fragment=bool(data.get("fragment", False)),
            watch_id=int(data.get("watch_id", 0)),
            member_id=int(header.get("member_id", 0)),
        )


# -- request builders --------------------------------------------------------------


def _bytes(value: str | bytes) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"etcd keys and values are str or bytes, not {type(value).__name__}")


def _b64(value: str | bytes) -> str:
    return base64.b64encode(_bytes(value)).decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_range_end(prefix: str | bytes) -> bytes:
    """The range_end that makes [prefix, range_end) every key starting with prefix (etcd's rule)."""
    key = bytearray(_bytes(prefix))
    while key and key[-1] == 0xFF:
        key.pop()
    if not key:
        return b"\0"  # every key
    key[-1] += 1
    return bytes(key)


def _range_body(key: str | bytes, range_end: str | bytes | None, prefix: bool) -> dict[str, Any]:
    if prefix and range_end is not None:
        raise ValueError("give range_end or prefix=True, not both")
    body: dict[str, Any] = {"key": _b64(key)}
    end = prefix_range_end(key) if prefix else range_end
    if end is not None:
        body["range_end"] = _b64(end)
    return body


_COMPARE_RESULTS = {"==": "EQUAL", "=": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}
_COMPARE_TARGETS = {"value": "VALUE", "version": "VERSION", "create": "CREATE", "mod": "MOD"}
_TARGET_FIELDS = {"VALUE": "value", "VERSION": "version", "CREATE": "create_revision", "MOD": "mod_revision"}


def compare(key: str | bytes, target: str, op: str, operand: int | str | bytes) -> dict[str, Any]:
    """A txn compare: ``compare("/a", "mod", "<", 5)``, ``compare("/a", "value", "==", b"x")``.

    target: "value", "version", "create" (create_revision) or "mod" (mod_revision);
    op: "==", "!=", "<", ">".
    """
    if target not in _COMPARE_TARGETS:
        raise ValueError(f"compare target must be one of {sorted(_COMPARE_TARGETS)}, not {target!r}")
    if op not in _COMPARE_RESULTS:
        raise ValueError(f"compare op must be one of {sorted(_COMPARE_RESULTS)}, not {op!r}")
    kind = _COMPARE_TARGETS[target]
    operand_json: Any = _b64(operand) if kind == "VALUE" else str(int(operand))  # type: ignore[arg-type]
    return {
        "key": _b64(key),
        "target": kind,
        "result": _COMPARE_RESULTS[op],
        _TARGET_FIELDS[kind]: operand_json,
    }


def op_put(key: str | bytes, value: str | bytes) -> dict[str, Any]:
    """A txn operation that puts key = value."""
    return {"request_put": {"key": _b64(key), "value": _b64(value)}}


def op_delete(
    key: str | bytes, range_end: str | bytes | None = None, *, prefix: bool = False
) -> dict[str, Any]:
    """A txn operation that deletes key (or [key, range_end), or every key under the prefix key)."""
    return {"request_delete_range": _range_body(key, range_end, prefix)}


def op_range(
    key: str | bytes, range_end: str | bytes | None = None, *, prefix: bool = False
) -> dict[str, Any]:
    """A txn operation that reads key (or a range)."""
    return {"request_range": _range_body(key, range_end, prefix)}


# -- endpoints and connections -----------------------------------------------------


@dataclass(frozen=True)
class _Endpoint:
    url: str
    host: str
    port: int
    tls: bool


def _parse_endpoint(text: str, default_tls: bool) -> _Endpoint:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"an etcd endpoint is a URL such as http://127.0.0.1:2379, not {text!r}")
    raw = text.strip()
    parts = urlsplit(raw if "://" in raw else ("https://" if default_tls else "http://") + raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"an etcd endpoint is http://host:port or https://host:port, not {text!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"an etcd endpoint has no path: {text!r}")
    try:
        port = parts.port or 2379
    except ValueError as error:
        raise ValueError(f"bad port in etcd endpoint {text!r}") from error
    tls = parts.scheme == "https"
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    return _Endpoint(f"{parts.scheme}://{shown}:{port}", host, port, tls)


class _Exchange:
    """One HTTP/1.1 request and its response, on a connection of its own.

    Every read is bounded by a deadline (time.monotonic()); a read that times
    out consumes nothing, so a streamed response can be read again after a
    timeout. ``abort()`` may be called from any thread: it shuts the socket
    down, which wakes a blocked read at once; the owning thread closes it.
    """

    def __init__(self, endpoint: _Endpoint, sock: socket.socket) -> None:
        self.endpoint = endpoint
        self.sock = sock
        self._buffer = bytearray()  # received, not yet consumed
        self._eof = False
        self.aborted = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self._chunked = False
        self._remaining: int | None = None  # body bytes left (Content-Length), or None
        self._body_done = False
        self._decoded = bytearray()  # body bytes decoded, not yet consumed (streaming)

    def abort(self) -> None:
        self.aborted = True
        # socket.socket's own shutdown: on a TLS socket this skips the TLS close, which
        # would touch the SSL object another thread may be reading.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _fill(self, deadline: float | None) -> None:
        """Receive more bytes; TimeoutError if none came before the deadline."""
        if self._eof:
            raise ConnectionResetError("the server closed the connection")
        if deadline is None:
            self.sock.settimeout(None)
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except ssl.SSLZeroReturnError:
            data = b""
        except (TimeoutError, ssl.SSLWantReadError) as error:
            raise TimeoutError("timed out") from error
        if self.aborted:
            raise ConnectionAbortedError("aborted")
        if not data:
            self._eof = True
            raise ConnectionResetError("the server closed the connection")
        self._buffer += data

    def send(self, method: str, path: str, headers: Mapping[str, str], body: bytes, deadline: float) -> None:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.endpoint.host}:{self.endpoint.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        self.sock.settimeout(max(0.001, deadline - time.monotonic()))
        self.sock.sendall("\r\n".join(lines).encode("latin-1") + body)

    def read_head(self, deadline: float) -> None:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > _MAX_HEAD:
                raise EtcdError("response headers too large", endpoint=self.endpoint.url)
            self._fill(deadline)
        head = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        status_line, *header_lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise EtcdError(f"not an HTTP response: {status_line[:80]!r}", endpoint=self.endpoint.url)
        self.status = int(parts[1])
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        if not self._chunked and "content-length" in self.headers:
            self._remaining = int(self.headers["content-length"])
            if self._remaining > _MAX_BODY:
                raise EtcdError("response too large", endpoint=self.endpoint.url)

    def _decode_some(self, deadline: float | None) -> bool:
        """Move the next piece of body into _decoded; False at the end of the body.

        Consumes only whole units (a chunk and its CRLF), so a timeout leaves the stream intact.
        """
        if self._body_done:
            return False
        return self._decode_chunk(deadline) if self._chunked else self._decode_plain(deadline)

    def _decode_plain(self, deadline: float | None) -> bool:
        if self._remaining == 0:
            self._body_done = True
            return False
        if not self._buffer:
            try:
                self._fill(deadline)
            except ConnectionResetError:
                if self._remaining is None:  # the body ran to the connection's end
                    self._body_done = True
                    return False
                raise
        take = len(self._buffer) if self._remaining is None else min(self._remaining, len(self._buffer))
        self._decoded += self._buffer[:take]
        del self._buffer[:take]
        if self._remaining is not None:
            self._remaining -= take
        return True

    def _decode_chunk(self, deadline: float | None) -> bool:
        while True:
            line_end = self._buffer.find(b"\r\n")
            if line_end >= 0:
                size_text = bytes(self._buffer[:line_end]).split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError as error:
                    raise EtcdError("bad chunked encoding", endpoint=self.endpoint.url) from error
                if size == 0:
                    self._body_done = True  # trailers, if any, are never read: the connection closes
                    del self._buffer[: line_end + 2]
                    return False
                if len(self._buffer) >= line_end + 2 + size + 2:
                    start = line_end + 2
                    self._decoded += self._buffer[start : start + size]
                    del self._buffer[: start + size + 2]
                    return True
            elif len(self._buffer) > 64:
                raise EtcdError("bad chunked encoding", endpoint=self.endpoint.url)
            self._fill(deadline)

    def read_body(self, deadline: float) -> bytes:
        while self._decode_some(deadline):
            if len(self._decoded) > _MAX_BODY:
                raise EtcdError("response too large", endpoint=self.endpoint.url)
        body = bytes(self._decoded)
        self._decoded.clear()
        return body

    def read_line(self, deadline: float | None) -> bytes | None:
        """The next newline-terminated message of a streamed body; None at its end.

        TimeoutError if none completes before the deadline (nothing is lost: call again).
        """
        while (end := self._decoded.find(b"\n")) < 0:
            if len(self._decoded) > _MAX_MESSAGE:
                raise EtcdError("watch message too large", endpoint=self.endpoint.url)
            if not self._decode_some(deadline):
                rest = bytes(self._decoded).strip()
                self._decoded.clear()
                return rest or None
        line = bytes(self._decoded[:end])
        del self._decoded[: end + 1]
        return line


# -- the client --------------------------------------------------------------------


def _error_from_body(status: int, body: Any, endpoint: str) -> EtcdError:
    """The EtcdError that a gateway error body means."""
    message, code = f"HTTP {status}", None
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):  # a streamed error: {"error": {"grpc_code": .., "message": ..}}
            body = error
            code = body.get("grpc_code")
        message = str(body.get("message") or body.get("error") or message)
        code = body.get("code", code)
    code = int(code) if isinstance(code, int | str) and str(code).lstrip("-").isdigit() else None
    return _error_for(message, code, status, endpoint)


def _error_for(message: str, code: int | None, status: int | None, endpoint: str) -> EtcdError:
    if code == _OUT_OF_RANGE and "compacted" in message:
        return EtcdCompactedError(message, compact_revision=0, endpoint=endpoint)
    if code in (_UNAUTHENTICATED, _PERMISSION_DENIED) or (
        code == _INVALID_ARGUMENT and ("authentication failed" in message or "user name is empty" in message)
    ):
        error: EtcdError = EtcdAuthError(message, code=code, status=status, endpoint=endpoint)
    else:
        error = EtcdError(message, code=code, status=status, endpoint=endpoint)
    return error


def _should_fail_over(error: EtcdError) -> bool:
    if isinstance(error, EtcdAuthError | EtcdCompactedError):
        return False
    return error.code in _RETRY_ELSEWHERE or (error.code is None and (error.status or 0) >= 500)


def _tls_refusal(error: BaseException) -> bool:
    """A TLS alert from the server (a refused client certificate): every member would say the same."""
    return isinstance(error, ssl.SSLError) and "ALERT" in str(error).upper()


class _NotSent(Exception):
    """The connection was never made: the request certainly was not applied."""


class EtcdClient:
    """An etcd v3 client for one cluster: see the module docstring.

    ``endpoints``: one URL or several (members of one cluster), e.g.
    ``"http://127.0.0.1:2379"``; a bare ``host:port`` gets ``https://`` when
    a TLS option is given, else ``http://``. Thread-safe: any number of
    threads may share one client. ``close()`` aborts what is in flight.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout: float = 5.0,
        connect_timeout: float | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        verify: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        tls_asked = ssl_context is not None or any(x is not None for x in (ca_file, cert_file, key_file))
        parsed = [_parse_endpoint(e, tls_asked) for e in endpoints]
        if not parsed:
            raise ValueError("give at least one etcd endpoint")
        for value, name in ((timeout, "timeout"), (connect_timeout, "connect_timeout")):
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        if (cert_file is None) != (key_file is None) and cert_file is None:
            raise ValueError("key_file needs cert_file")
        self._endpoints = tuple(parsed)
        self.timeout = float(timeout)
        self.connect_timeout = (
            float(connect_timeout) if connect_timeout is not None else min(self.timeout, 3.0)
        )
        self._username, self._password = username, password
        self._ssl: ssl.SSLContext | None = ssl_context
        if self._ssl is None and (tls_asked or any(e.tls for e in parsed)):
            self._ssl = ssl.create_default_context(cafile=ca_file)
            if cert_file is not None:
                self._ssl.load_cert_chain(cert_file, key_file)
            if not verify:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        self._preferred = 0  # index of the endpoint that last answered (a plain int: any thread)
        self._lock = threading.Lock()  # guards _live, _closed, _token
        self._live: set[_Exchange] = set()  # exchanges in flight, for close()
        self._closed = False
        self._token: str | None = None
        self._auth_lock = threading.Lock()  # one authentication at a time

    # -- plumbing --------------------------------------------------------------------

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(e.url for e in self._endpoints)

    @property
    def preferred_endpoint(self) -> str:
        """The endpoint the next request goes to first (the one that last answered)."""
        return self._endpoints[self._preferred].url

    @property
    def closed(self) -> bool:
        return self._closed

    def avoid(self, endpoint: str) -> None:
        """If ``endpoint`` is the preferred one, prefer the next: it just failed (a watch broke)."""
        urls = self.endpoints
        if urls[self._preferred] == endpoint:
            self._preferred = (self._preferred + 1) % len(urls)

    def fork(self) -> EtcdClient:
        """A client with the same endpoints, options and token, but its own requests in flight:
        closing it aborts only its own requests, and closing this one does not close it."""
        twin = copy.copy(self)
        twin._lock = threading.Lock()
        twin._auth_lock = threading.Lock()
        twin._live = set()
        twin._closed = False
        return twin

    def close(self) -> None:
        """Abort every request and watch in flight (they raise EtcdClosedError); later requests too."""
        with self._lock:
            self._closed = True
            live = list(self._live)
        for exchange in live:
            exchange.abort()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _order(self, endpoint: str | None) -> list[int]:
        if endpoint is not None:
            urls = self.endpoints
            wanted = _parse_endpoint(endpoint, self._ssl is not None).url
            if wanted not in urls:
                raise ValueError(f"{endpoint!r} is not one of this client's endpoints {list(urls)}")
            return [urls.index(wanted)]
        first = self._preferred
        return [(first + i) % len(self._endpoints) for i in range(len(self._endpoints))]

    def _connect(self, endpoint: _Endpoint, deadline: float) -> _Exchange:
        if self._closed:
            raise EtcdClosedError("the etcd client is closed", endpoint=endpoint.url)
        timeout = max(0.001, min(self.connect_timeout, deadline - time.monotonic()))
        try:
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
        except OSError as error:
            raise _NotSent(f"{endpoint.url}: cannot connect: {error}") from error
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        exchange = _Exchange(endpoint, sock)
        with self._lock:
            self._live.add(exchange)
            closed = self._closed
        if closed:
            exchange.abort()
        if endpoint.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            try:
                wrapped = self._ssl.wrap_socket(
                    sock, server_hostname=endpoint.host, do_handshake_on_connect=False
                )
                exchange.sock = wrapped
                wrapped.settimeout(timeout)
                wrapped.do_handshake()
            except ssl.SSLCertVerificationError as error:
                self._release(exchange)
                raise EtcdAuthError(
                    f"{endpoint.url}: TLS verification failed: {error}", endpoint=endpoint.url
                ) from error
            except (OSError, ValueError) as error:
                self._release(exchange)
                if self._closed:
                    raise EtcdClosedError("the etcd client is closed", endpoint=endpoint.url) from error
                if _tls_refusal(error):
                    raise EtcdAuthError(
                        f"{endpoint.url}: TLS refused: {error}", endpoint=endpoint.url
                    ) from error
                raise _NotSent(f"{endpoint.url}: TLS handshake failed: {error}") from error
        return exchange

    def _release(self, exchange: _Exchange) -> None:
        with self._lock:
            self._live.discard(exchange)
        exchange.close()

    def _headers(self, token: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            headers["Authorization"] = token
        if extra:
            headers.update(extra)
        return headers

    def _exchange_once(
        self, endpoint: _Endpoint, path: str, payload: bytes, deadline: float, token: str | None
    ) -> Any:
        """POST payload to one endpoint; the decoded JSON body, or an exception."""
        exchange = self._connect(endpoint, deadline)
        try:
            try:
                exchange.send("POST", path, self._headers(token), payload, deadline)
            except OSError as error:
                raise _NotSent(f"{endpoint.url}: send failed: {error}") from error
            exchange.read_head(deadline)
            raw = exchange.read_body(deadline)
        except (OSError, EtcdError) as error:
            if exchange.aborted or self._closed:
                raise EtcdClosedError("the etcd client was closed", endpoint=endpoint.url) from error
            if _tls_refusal(error):
                raise EtcdAuthError(f"{endpoint.url}: TLS refused: {error}", endpoint=endpoint.url) from error
            raise
        finally:
            self._release(exchange)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError as error:
            if exchange.status >= 500:
                raise EtcdError(
                    f"HTTP {exchange.status}", status=exchange.status, endpoint=endpoint.url
                ) from error
            raise EtcdError(
                f"{endpoint.url}{path}: HTTP {exchange.status}, not JSON: {raw[:200]!r}",
                status=exchange.status,
                endpoint=endpoint.url,
            ) from error
        if exchange.status != 200:
            raise _error_from_body(exchange.status, body, endpoint.url)
        return body

    def _token_for(self, endpoint: str | None, stale: str | None = None) -> str | None:
        """The auth token (None without credentials); a new one if the current is ``stale``."""
        if self._username is None:
            return None
        with self._auth_lock:
            if self._token is None or self._token == stale:
                self._token = self._authenticate(endpoint)
            return self._token

    def _authenticate(self, endpoint: str | None) -> str:
        body = {"name": self._username, "password": self._password}
        result = self._call("/v3/auth/authenticate", body, endpoint=endpoint, token=None, mutation=False)
        token = result.get("token")
        if not token:
            raise EtcdAuthError("auth/authenticate returned no token (is authentication enabled?)")
        return str(token)

    def _call(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        timeout: float | None = None,
        endpoint: str | None = None,
        token: str | None,
        mutation: bool,
    ) -> Any:
        payload = json.dumps(body).encode("utf-8")
        per_try = self.timeout if timeout is None else timeout
        errors: list[BaseException] = []
        for index in self._order(endpoint):
            target = self._endpoints[index]
            try:
                result = self._exchange_once(target, path, payload, time.monotonic() + per_try, token)
            except EtcdClosedError:
                raise
            except _NotSent as error:
                if self._closed:
                    raise EtcdClosedError("the etcd client is closed", endpoint=target.url) from error
                errors.append(error)
                continue
            except EtcdError as error:
                if not _should_fail_over(error):
                    raise
                if mutation and "no leader" not in str(error):
                    self.avoid(target.url)  # the caller's retry goes elsewhere first
                    raise EtcdUnavailableError(
                        f"{target.url}{path}: {error}; the write may have been applied",
                        errors=[*errors, error],
                        maybe_applied=True,
                        endpoint=target.url,
                    ) from error
                errors.append(error)
                continue
            except OSError as error:  # reset, timed out, closed mid-response
                if mutation:
                    self.avoid(target.url)  # the caller's retry goes elsewhere first
                    raise EtcdUnavailableError(
                        f"{target.url}{path}: {type(error).__name__}: {error}; "
                        "the write may have been applied",
                        errors=[*errors, error],
                        maybe_applied=True,
                        endpoint=target.url,
                    ) from error
                errors.append(error)
                continue
            if endpoint is None:
                self._preferred = index
            return result
        summary = "; ".join(f"{type(e).__name__}: {e}" for e in errors) or "no endpoint tried"
        raise EtcdUnavailableError(f"no etcd endpoint answered {path}: {summary}", errors=errors)

    def call(
        self,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        endpoint: str | None = None,
        mutation: bool = True,
    ) -> Any:
        """POST body (JSON; keys and values base64 as the gateway wants) to a gateway path such
        as ``/v3/auth/user/add``; the JSON answer. Failover as for writes unless ``mutation=False``."""
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', not {path!r}")
        token = self._token_for(endpoint)
        try:
            return self._call(
                path, body or {}, timeout=timeout, endpoint=endpoint, token=token, mutation=mutation
            )
        except EtcdAuthError as error:
            if token is None or "invalid auth token" not in str(error):
                raise
            fresh = self._token_for(endpoint, stale=token)
            return self._call(
                path, body or {}, timeout=timeout, endpoint=endpoint, token=fresh, mutation=mutation
            )

    # -- the KV API ----------------------------------------------------------------------

    def range(
        self,
        key: str | bytes,
        range_end: str | bytes | None = None,
        *,
        prefix: bool = False,
        revision: int = 0,
        limit: int = 0,
        serializable: bool = False,
        keys_only: bool = False,
        count_only: bool = False,
        timeout: float | None = None,
        endpoint: str | None = None,
    ) -> RangeResult:
        """Read key, [key, range_end), or every key under the prefix key, as of ``revision``
        (0: the latest). Linearizable unless ``serializable``. EtcdCompactedError if the
        revision was compacted away."""
        body = _range_body(key, range_end, prefix)
        for name, value in (("revision", revision), ("limit", limit)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, not {value!r}")
            if value:
                body[name] = str(value)
        for name, flag in (
            ("serializable", serializable),
            ("keys_only", keys_only),
            ("count_only", count_only),
        ):
            if flag:
                body[name] = True
        result = self.call("/v3/kv/range", body, timeout=timeout, endpoint=endpoint, mutation=False)
        header = result.get("header", {})
        return RangeResult(
            kvs=tuple(KeyValue.from_json(kv) for kv in result.get("kvs", ())),
            revision=int(header.get("revision", 0)),
            count=int(result.get("count", 0)),
            more=bool(result.get("more", False)),
            member_id=int(header.get("member_id", 0)),
        )

    def get(self, key: str | bytes, *, revision: int = 0, timeout: float | None = None) -> KeyValue | None:
        """One key as of ``revision`` (0: the latest), or None."""
        result = self.range(key, revision=revision, timeout=timeout)
        return result.kvs[0] if result.kvs else None

    def put(
        self, key: str | bytes, value: str | bytes, *, lease: int = 0, timeout: float | None = None
    ) -> int:
        """Set key = value; the revision of the write."""
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(int(lease))
        result = self.call("/v3/kv/put", body, timeout=timeout)
        return int(result.get("header", {}).get("revision", 0))

    def delete(
        self,
        key: str | bytes,
        range_end: str | bytes | None = None,
        *,
        prefix: bool = False,
        timeout: float | None = None,
    ) -> DeleteResult:
        """Delete key, [key, range_end), or every key under the prefix key."""
        result = self.call("/v3/kv/deleterange", _range_body(key, range_end, prefix), timeout=timeout)
        return DeleteResult(int(result.get("deleted", 0)), int(result.get("header", {}).get("revision", 0)))

    def txn(
        self,
        compares: Sequence[Mapping[str, Any]] = (),
        success: Sequence[Mapping[str, Any]] = (),
        failure: Sequence[Mapping[str, Any]] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResult:
        """One transaction: if every compare holds, the success ops run, else the failure ops;
        all of it at one revision. Build the parts with compare(), op_put(), op_delete(), op_range()."""
        body = {"compare": list(compares), "success": list(success), "failure": list(failure)}
        result = self.call("/v3/kv/txn", body, timeout=timeout)
        return TxnResult(
            succeeded=bool(result.get("succeeded", False)),
            revision=int(result.get("header", {}).get("revision", 0)),
            responses=tuple(result.get("responses", ())),
        )

    def compact(self, revision: int, *, physical: bool = True, timeout: float | None = None) -> int:
        """Discard the history before ``revision``; the store's revision after it."""
        body = {"revision": str(int(revision)), "physical": bool(physical)}
        result = self.call("/v3/kv/compaction", body, timeout=timeout)
        return int(result.get("header", {}).get("revision", 0))

    # -- cluster ---------------------------------------------------------------------------

    def status(self, endpoint: str | None = None, *, timeout: float | None = None) -> MemberStatus:
        """``maintenance/status`` of one member (``endpoint``; by default the first that answers)."""
        result = self.call("/v3/maintenance/status", {}, timeout=timeout, endpoint=endpoint, mutation=False)
        header = result.get("header", {})
        return MemberStatus(
            endpoint=endpoint or self.preferred_endpoint,
            member_id=int(header.get("member_id", 0)),
            leader=int(result.get("leader", 0)),
            revision=int(header.get("revision", 0)),
            raft_term=int(result.get("raftTerm", result.get("raft_term", 0))),
            raft_index=int(result.get("raftIndex", result.get("raft_index", 0))),
            version=str(result.get("version", "")),
            db_size=int(result.get("dbSize", result.get("db_size", 0))),
            errors=tuple(str(e) for e in result.get("errors", ())),
        )

    def members(self, *, timeout: float | None = None) -> list[Member]:
        """The cluster's members."""
        result = self.call("/v3/cluster/member/list", {}, timeout=timeout, mutation=False)
        return [
            Member(
                member_id=int(m.get("ID", m.get("id", 0))),
                name=str(m.get("name", "")),
                client_urls=tuple(m.get("clientURLs", m.get("client_urls", ()))),
                peer_urls=tuple(m.get("peerURLs", m.get("peer_urls", ()))),
                is_learner=bool(m.get("isLearner", m.get("is_learner", False))),
            )
            for m in result.get("members", ())
        ]

    def authenticate(self) -> str:
        """Get a fresh auth token now (it is also got on first use); the token."""
        if self._username is None:
            raise EtcdAuthError("this client has no username and password")
        return self._token_for(None, stale=self._token) or ""

    # -- watch -----------------------------------------------------------------------------

    def watch(
        self,
        key: str | bytes,
        range_end: str | bytes | None = None,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        progress_notify: bool = True,
        prev_kv: bool = False,
        require_leader: bool = True,
        endpoint: str | None = None,
        timeout: float | None = None,
    ) -> EtcdWatch:
        """Open a watch and wait (at most ``timeout``) until etcd confirms it: an EtcdWatch.

        Events from ``start_revision`` on (0: from now). ``require_leader``: the
        member cancels the watch when it loses its leader, instead of going
        silent (etcd's "hasleader" metadata), so a watch never hangs on a
        member cut off from its cluster. Fails over across endpoints as reads
        do; EtcdCompactedError if start_revision has been compacted away.
        """
        body: dict[str, Any] = _range_body(key, range_end, prefix)
        if isinstance(start_revision, bool) or not isinstance(start_revision, int) or start_revision < 0:
            raise ValueError(f"start_revision must be an int >= 0, not {start_revision!r}")
        if start_revision:
            body["start_revision"] = str(start_revision)
        if progress_notify:
            body["progress_notify"] = True
        if prev_kv:
            body["prev_kv"] = True
        payload = json.dumps({"create_request": body}).encode("utf-8")
        extra = {"Grpc-Metadata-Hasleader": "true"} if require_leader else {}
        token = self._token_for(endpoint)
        try:
            return self._open_watch(payload, extra, endpoint, timeout, token)
        except EtcdAuthError as error:
            if token is None or "invalid auth token" not in str(error):
                raise
            fresh = self._token_for(endpoint, stale=token)
            return self._open_watch(payload, extra, endpoint, timeout, fresh)

    def _open_watch(
        self,
        payload: bytes,
        extra: Mapping[str, str],
        endpoint: str | None,
        timeout: float | None,
        token: str | None,
    ) -> EtcdWatch:
        per_try = self.timeout if timeout is None else timeout
        errors: list[BaseException] = []
        headers = self._headers(token, extra)
        for index in self._order(endpoint):
            target = self._endpoints[index]
            try:
                watch = self._watch_on(target, headers, payload, time.monotonic() + per_try)
            except _NotSent as error:
                if self._closed:
                    raise EtcdClosedError("the etcd client is closed", endpoint=target.url) from error
                errors.append(error)
                continue
            except EtcdClosedError:
                raise
            except EtcdError as error:
                if self._closed:
                    raise EtcdClosedError("the etcd client is closed", endpoint=target.url) from error
                if isinstance(error, EtcdAuthError | EtcdCompactedError) or (
                    error.status is not None and error.status < 500 and not _should_fail_over(error)
                ):
                    raise  # the request itself is wrong: another member would say the same
                errors.append(error)
                continue
            except OSError as error:
                if self._closed:
                    raise EtcdClosedError("the etcd client is closed", endpoint=target.url) from error
                errors.append(error)
                continue
            if endpoint is None:
                self._preferred = index
            return watch
        summary = "; ".join(f"{type(e).__name__}: {e}" for e in errors) or "the deadline passed"
        raise EtcdUnavailableError(f"no etcd endpoint opened the watch: {summary}", errors=errors)

    def _watch_on(
        self, target: _Endpoint, headers: Mapping[str, str], payload: bytes, deadline: float
    ) -> EtcdWatch:
        """Open the watch on one member and read its confirmation; closed again on any failure."""
        exchange = self._connect(target, deadline)
        watch = EtcdWatch(self, exchange)
        try:
            exchange.send("POST", "/v3/watch", headers, payload, deadline)
            exchange.read_head(deadline)
            if exchange.status != 200:
                raw = exchange.read_body(deadline)
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {}
                raise _error_from_body(exchange.status, body, target.url)
            first = watch.read(deadline - time.monotonic())
            if first is None:
                raise TimeoutError("etcd did not confirm the watch in time")
            if first.canceled:
                raise watch._canceled_error(first)
            if not first.created:
                raise EtcdError(
                    f"the watch's first message was not its creation: {first}", endpoint=target.url
                )
        except BaseException as error:
            watch.close()
            if exchange.aborted and not isinstance(error, EtcdClosedError) and self._closed:
                raise EtcdClosedError("the etcd client is closed", endpoint=target.url) from error
            if _tls_refusal(error):
                raise EtcdAuthError(f"{target.url}: TLS refused: {error}", endpoint=target.url) from error
            raise
        watch.created = first
        return watch


@dataclass(eq=False)
class EtcdWatch:
    """An open watch stream (from EtcdClient.watch); read it from one thread, close it from any.

    ``read(timeout)`` returns the next WatchResponse, or None if none came in
    time (the stream stays usable); it raises EtcdCompactedError when etcd
    cancels the watch because its start revision was compacted,
    EtcdUnavailableError when the connection breaks or etcd cancels the
    watch otherwise (e.g. the member lost its leader), EtcdClosedError once
    closed. Iterating yields responses until one of those.
    """

    client: EtcdClient
    _exchange: _Exchange
    created: WatchResponse | None = None
    _closed: bool = field(default=False, repr=False)

    @property
    def endpoint(self) -> str:
        return self._exchange.endpoint.url

    def close(self) -> None:
        """End the stream (any thread): a read blocked on it raises EtcdClosedError."""
        self._closed = True
        self._exchange.abort()
        self.client._release(self._exchange)

    def __enter__(self) -> EtcdWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[WatchResponse]:
        while True:
            response = self.read(None)
            if response is not None:
                yield response

    def _canceled_error(self, response: WatchResponse) -> EtcdError:
        url = self.endpoint
        if response.compact_revision:
            return EtcdCompactedError(
                f"{url}: the watch's start revision was compacted (oldest kept: {response.compact_revision})",
                compact_revision=response.compact_revision,
                endpoint=url,
            )
        reason = response.cancel_reason or "no reason given"
        if "permission denied" in reason or "auth" in reason or "user name" in reason:
            code = _UNAUTHENTICATED if "invalid auth token" in reason else _PERMISSION_DENIED
            return EtcdAuthError(f"{url}: watch refused: {reason}", code=code, endpoint=url)
        return EtcdUnavailableError(f"{url}: etcd canceled the watch: {reason}", endpoint=url)

    def read(self, timeout: float | None) -> WatchResponse | None:
        if self._closed:
            raise EtcdClosedError("the watch is closed", endpoint=self.endpoint)
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        try:
            line = self._exchange.read_line(deadline)
        except TimeoutError:
            if self._closed or self._exchange.aborted:
                raise EtcdClosedError("the watch was closed", endpoint=self.endpoint) from None
            return None
        except OSError as error:
            if self._closed or self._exchange.aborted or self.client.closed:
                raise EtcdClosedError("the watch was closed", endpoint=self.endpoint) from error
            raise EtcdUnavailableError(
                f"{self.endpoint}: the watch stream broke: {error}", endpoint=self.endpoint
            ) from error
        if line is None:
            raise EtcdUnavailableError(f"{self.endpoint}: the watch stream ended", endpoint=self.endpoint)
        try:
            message = json.loads(line)
        except ValueError as error:
            raise EtcdError(
                f"{self.endpoint}: a watch message is not JSON: {line[:200]!r}", endpoint=self.endpoint
            ) from error
        if not isinstance(message, Mapping):
            raise EtcdError(
                f"{self.endpoint}: unexpected watch message {line[:200]!r}", endpoint=self.endpoint
            )
        if "error" in message and "result" not in message:
            failure = _error_from_body(0, message, self.endpoint)
            if _should_fail_over(failure):
                raise EtcdUnavailableError(f"{self.endpoint}: {failure}", endpoint=self.endpoint) from failure
            raise failure
        response = WatchResponse.from_json(message.get("result", {}))
        if response.canceled and not response.created:
            raise self._canceled_error(response)
        return response
