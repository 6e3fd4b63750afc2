"""How keys under an etcd prefix become a config (ftmap._etcd_keys): no server needed."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from ftmap._config import ParseError
from ftmap._etcd_keys import KeyConflictError, KeyLayout, normalize_prefix


def build(flat: dict[str, bytes], prefix: str = "/app/", **options: Any) -> dict[str, Any]:
    return KeyLayout(prefix, **options).build({k.encode(): v for k, v in flat.items()})


def test_nested_by_default_json_values() -> None:
    config = build(
        {
            "/app/db/host": b'"db.local"',
            "/app/db/port": b"5432",
            "/app/db/replicas/0": b'{"host": "r0"}',
            "/app/debug": b"true",
            "/app/limits": b"[1, 2.5, null]",
        }
    )
    assert config == {
        "db": {"host": "db.local", "port": 5432, "replicas": {"0": {"host": "r0"}}},
        "debug": True,
        "limits": [1, 2.5, None],
    }


def test_a_key_that_is_a_value_and_a_parent_is_a_conflict_in_any_order() -> None:
    for flat in (
        {"/app/db": b'"x"', "/app/db/host": b'"h"'},
        {"/app/db/host": b'"h"', "/app/db": b'{"host": "h"}'},  # an object value is not merged either
        {"/app/a/b": b"1", "/app/a/b/c/d": b"2"},
    ):
        with pytest.raises(KeyConflictError) as caught:
            build(flat)
        assert set(caught.value.keys) == set(flat)
        assert isinstance(caught.value, ParseError)
        copy = pickle.loads(pickle.dumps(caught.value))
        assert copy.keys == caught.value.keys and str(copy) == str(caught.value)
    assert build({"/app/db-x": b"1", "/app/db/host": b"2", "/app/db": b"{}"}.copy() | {}, layout="flat") == {
        "db-x": 1,
        "db/host": 2,
        "db": {},
    }


@pytest.mark.parametrize("key", ["/app/", "/app/db//host", "/app/db/", "/app//x"])
def test_keys_without_a_name_are_refused(key: str) -> None:
    with pytest.raises(ParseError):
        build({key: b"1"})


def test_bad_values_refuse_the_whole_config_naming_the_key() -> None:
    with pytest.raises(ParseError, match="/app/b: invalid JSON"):
        build({"/app/a": b"1", "/app/b": b"{nope"})
    with pytest.raises(ParseError, match="not UTF-8"):
        build({"/app/a": b"\xff"}, decode="raw")
    with pytest.raises(ParseError):
        build({"/app/a": b"\xff\xfe"})
    with pytest.raises(ParseError, match=r"nested too deep|invalid JSON"):
        build({"/app/a": b"[" * 200_000 + b"]" * 200_000})
    with pytest.raises(ParseError, match="not UTF-8"):
        KeyLayout("/app/").build({b"/app/\xff": b"1"})


def test_raw_bytes_and_custom_decoders() -> None:
    assert build({"/app/a": b"text"}, decode="raw") == {"a": "text"}
    assert build({"/app/a": b"\x00\x01"}, decode="bytes") == {"a": b"\x00\x01"}
    assert build({"/app/a": b"5"}, decode=lambda key, value: (key, int(value) * 2)) == {"a": ("/app/a", 10)}

    def broken(key: str, value: bytes) -> Any:
        raise RuntimeError("boom")

    with pytest.raises(ParseError, match="RuntimeError: boom"):
        build({"/app/a": b"5"}, decode=broken)


def test_prefix_and_separator() -> None:
    assert normalize_prefix("/app", "/") == b"/app/"
    assert normalize_prefix(b"/app/", "/") == b"/app/"
    assert build({"app.db.host": b'"h"'}, prefix="app", separator=".") == {"db": {"host": "h"}}
    with pytest.raises(ValueError):
        normalize_prefix("", "/")
    with pytest.raises(TypeError):
        normalize_prefix(5, "/")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        KeyLayout("/app/", layout="tree")
    with pytest.raises(ValueError):
        KeyLayout("/app/", decode="yaml")
    with pytest.raises(ValueError):
        KeyLayout("/app/", separator="")
    with pytest.raises(ParseError):
        KeyLayout("/app/").build({b"/other/x": b"1"})
