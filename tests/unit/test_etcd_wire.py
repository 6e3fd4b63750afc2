"""The etcd client's request building and HTTP handling, against local sockets: no etcd needed.

(The client against real etcd servers is tests/etcd/test_etcd_client.py.)
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from ftmap._etcd_client import (
    EtcdClient,
    EtcdError,
    EtcdUnavailableError,
    compare,
    op_delete,
    op_put,
    prefix_range_end,
)
from tests.threads import within


def test_prefix_range_end_is_etcds_rule() -> None:
    assert prefix_range_end("/app/") == b"/app0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\0"


def test_txn_parts_are_the_gateways_json() -> None:
    assert compare("k", "mod", "<", 5) == {
        "key": "aw==",
        "target": "MOD",
        "result": "LESS",
        "mod_revision": "5",
    }
    assert compare(b"k", "value", "==", "v")["value"] == base64.b64encode(b"v").decode()
    assert op_put("k", b"\x00") == {"request_put": {"key": "aw==", "value": "AA=="}}
    assert op_delete("a", prefix=True) == {"request_delete_range": {"key": "YQ==", "range_end": "Yg=="}}
    with pytest.raises(ValueError):
        compare("k", "lease", "==", 1)
    with pytest.raises(ValueError):
        compare("k", "mod", "<=", 1)


def test_bad_arguments_are_refused_before_any_request() -> None:
    with pytest.raises(ValueError):
        EtcdClient([])
    with pytest.raises(ValueError):
        EtcdClient("ftp://host:1")
    with pytest.raises(ValueError):
        EtcdClient("http://host:1/path")
    with pytest.raises(ValueError):
        EtcdClient("http://h:1", username="u")
    with pytest.raises(ValueError):
        EtcdClient("http://h:1", timeout=0)
    client = EtcdClient(["127.0.0.1:1", "[::1]:2"])
    assert client.endpoints == ("http://127.0.0.1:1", "http://[::1]:2")
    with pytest.raises(ValueError):
        client.range("k", "z", prefix=True)
    with pytest.raises(ValueError):
        client.range("k", revision=-1)
    with pytest.raises(TypeError):
        client.put("k", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        client.call("v3/kv/range")
    with pytest.raises(ValueError):
        client.range("k", endpoint="http://127.0.0.1:3")


class OneShotServer:
    """Accepts connections on loopback and answers each with ``reply(request_bytes)`` pieces."""

    def __init__(self, pieces: list[bytes], pause: float = 0.0) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.pieces, self.pause = pieces, pause
        self.requests: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.server.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                while len(body) < length:
                    body += conn.recv(4096)
                self.requests.append(head + b"\r\n\r\n" + body)
                try:
                    for piece in self.pieces:
                        if self.stop.wait(self.pause):
                            return
                        conn.sendall(piece)
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.server.close()
        self.thread.join(5)


@pytest.fixture
def serve() -> Iterator[list[OneShotServer]]:
    servers: list[OneShotServer] = []
    yield servers
    for server in servers:
        server.close()


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def test_chunked_responses_split_anywhere_are_decoded(serve: list[OneShotServer]) -> None:
    body = json.dumps(
        {"header": {"revision": "7"}, "kvs": [{"key": "aw==", "value": "dg==", "mod_revision": "7"}]}
    )
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(
        body[:10].encode(), body[10:].encode()
    )
    server = OneShotServer([raw[i : i + 3] for i in range(0, len(raw), 3)])  # three bytes at a time
    serve.append(server)
    result = EtcdClient(server.url).range("k")
    assert result.revision == 7 and result.kvs[0].value == b"v"
    request = server.requests[0]
    assert request.startswith(b"POST /v3/kv/range HTTP/1.1\r\n") and b"Connection: close" in request
    assert json.loads(request.partition(b"\r\n\r\n")[2]) == {"key": "aw=="}


def test_watch_messages_across_chunks_and_timeouts_lose_nothing(serve: list[OneShotServer]) -> None:
    created = json.dumps({"result": {"header": {"revision": "3"}, "created": True}}).encode() + b"\n"
    event = {"kv": {"key": "aw==", "value": "MQ==", "mod_revision": "4"}}
    message = json.dumps({"result": {"header": {"revision": "4"}, "events": [event]}}).encode() + b"\n"
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    # The second message arrives in two chunks 0.3 s apart: a read with a 0.1 s timeout in between
    # returns None and must not lose the half already received.
    server = OneShotServer(
        [
            head + chunked(created)[:-5],
            b"%x\r\n%s\r\n" % (10, message[:10]),
            b"%x\r\n%s\r\n" % (len(message) - 10, message[10:]),
        ],
        pause=0.3,
    )
    serve.append(server)
    watch = EtcdClient(server.url).watch("k")
    assert watch.created is not None and watch.created.revision == 3
    assert watch.read(0.1) is None
    response = within(5, lambda: next(r for r in iter(lambda: watch.read(0.1), 0) if r is not None))
    assert response.events[0].revision == 4 and response.events[0].kv.value == b"1"
    watch.close()


def test_gateway_errors_are_typed(serve: list[OneShotServer]) -> None:
    def reply(status: str, body: dict[str, object]) -> bytes:
        data = json.dumps(body).encode()
        return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status.encode(), len(data), data)

    bad = OneShotServer(
        [
            reply(
                "400 Bad Request",
                {"error": "etcdserver: mvcc: required revision has been compacted", "code": 11},
            )
        ]
    )
    serve.append(bad)
    with pytest.raises(EtcdError, match="compacted"):
        EtcdClient(bad.url).range("k", revision=1)
    no_leader = OneShotServer(
        [reply("503 Service Unavailable", {"error": "etcdserver: no leader", "code": 14})]
    )
    serve.append(no_leader)
    with pytest.raises(EtcdUnavailableError):
        EtcdClient(no_leader.url).range("k")
    garbage = OneShotServer([b"SSH-2.0-OpenSSH\r\n\r\n"])
    serve.append(garbage)
    with pytest.raises(EtcdError):
        EtcdClient(garbage.url).range("k")


def test_a_trickling_server_cannot_stretch_the_deadline(serve: list[OneShotServer]) -> None:
    """One byte every 0.2 s: each read is quick, the request as a whole is not."""
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
    server = OneShotServer([bytes([b]) for b in raw], pause=0.2)
    serve.append(server)
    client = EtcdClient(server.url, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(EtcdUnavailableError):
        within(10, lambda: client.range("k"))
    assert time.monotonic() - started < 2.0
