"""How the keys under an etcd prefix become one configuration mapping.

Keys: the prefix is cut off and the rest is split on the separator ("/"):
with prefix ``/app/``, ``/app/db/host`` becomes ``config["db"]["host"]`` and
``/app/port`` becomes ``config["port"]`` (``layout="nested"``, the default).
A key that is both a value and the parent of other keys (``/app/db`` and
``/app/db/host``) is a conflict: the whole revision is refused with a
KeyConflictError naming both keys; so is a value that is a JSON object while
keys below it also exist (values and keys are never merged). A key with an
empty segment (``/app/db//host``, ``/app/db/``), or equal to the prefix
itself, has no config name: refused too. ``layout="flat"`` keeps the rest of
the key whole (``config["db/host"]``) and has no conflicts. Keys must be
UTF-8.

Values: JSON by default (``decode="json"``: ``5`` is an int, ``"x"`` a
string, ``{"a": 1}`` a mapping), the UTF-8 text as it is (``decode="raw"``),
the bytes (``decode="bytes"``), or your own ``decode(key, value_bytes)``.
A value that does not decode refuses the whole revision (ParseError naming
the key). The SnapshotMap deep-freezes the result on publish, as for files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ._config import ParseError

__all__ = ["Decoder", "KeyConflictError", "KeyLayout", "normalize_prefix"]

Decoder = Callable[[str, bytes], Any]


class KeyConflictError(ParseError):
    """Two keys under the prefix claim the same config name (one is a value, the other below it).

    ``keys`` are the two etcd keys, as text.
    """

    def __init__(self, first: str, second: str, why: str) -> None:
        self.keys = (first, second)
        super().__init__(f"key conflict: {first!r} and {second!r}: {why}")

    def __reduce__(self) -> tuple[object, ...]:
        return (_conflict, (str(self), self.keys))


def _conflict(message: str, keys: tuple[str, str]) -> KeyConflictError:
    error = KeyConflictError.__new__(KeyConflictError)
    ParseError.__init__(error, message)
    error.keys = keys
    return error


def normalize_prefix(prefix: str | bytes, separator: str) -> bytes:
    """The prefix as bytes, ending with the separator (``/app`` -> ``/app/``), so that
    ``/app`` never takes in ``/apple``."""
    if isinstance(prefix, str):
        raw = prefix.encode("utf-8")
    elif isinstance(prefix, bytes):
        raw = prefix
    else:
        raise TypeError(f"prefix must be str or bytes, not {type(prefix).__name__}")
    if not raw:
        raise ValueError("the prefix must not be empty (a config lives under a prefix such as '/app/')")
    sep = separator.encode("utf-8")
    return raw if raw.endswith(sep) else raw + sep


def _json(key: str, value: bytes) -> Any:
    try:
        return json.loads(value)
    except RecursionError as error:
        raise ParseError(f"{key}: JSON nested too deep") from error
    except ValueError as error:  # JSONDecodeError, and UnicodeDecodeError
        raise ParseError(f"{key}: invalid JSON: {error}") from error


def _raw(key: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ParseError(f"{key}: the value is not UTF-8: {error}") from error


_DECODERS: dict[str, Decoder] = {"json": _json, "raw": _raw, "bytes": lambda key, value: value}


class KeyLayout:
    """The mapping from etcd keys and values to one config (see the module docstring)."""

    __slots__ = ("_decode", "decode_name", "layout", "prefix", "separator")

    def __init__(
        self,
        prefix: str | bytes,
        *,
        decode: str | Decoder = "json",
        layout: str = "nested",
        separator: str = "/",
    ) -> None:
        if not isinstance(separator, str) or not separator:
            raise ValueError(f"separator must be a non-empty string, not {separator!r}")
        if layout not in ("nested", "flat"):
            raise ValueError(f'layout must be "nested" or "flat", not {layout!r}')
        if isinstance(decode, str):
            if decode not in _DECODERS:
                raise ValueError(f"decode must be one of {sorted(_DECODERS)} or a callable, not {decode!r}")
            self._decode, self.decode_name = _DECODERS[decode], decode
        elif callable(decode):
            self._decode, self.decode_name = decode, getattr(decode, "__name__", "custom")
        else:
            raise TypeError(f"decode must be a str or a callable, not {type(decode).__name__}")
        self.prefix = normalize_prefix(prefix, separator)
        self.separator = separator
        self.layout = layout

    def name_of(self, key: bytes) -> str:
        """The key's text without the prefix; ParseError if it is not UTF-8 or not under the prefix."""
        if not key.startswith(self.prefix):
            raise ParseError(f"{key!r} is not under the prefix {self.prefix!r}")
        try:
            return key[len(self.prefix) :].decode("utf-8")
        except UnicodeDecodeError as error:
            raise ParseError(f"the key {key!r} is not UTF-8") from error

    def decode_value(self, key: bytes, value: bytes) -> Any:
        text = key.decode("utf-8", "backslashreplace")
        try:
            return self._decode(text, value)
        except ParseError:
            raise
        except Exception as error:  # a decode of the user's: its exception is the reason
            raise ParseError(f"{text}: {type(error).__name__}: {error}") from error

    def build(self, flat: Mapping[bytes, bytes]) -> dict[str, Any]:
        """The config for these keys and values (each key under the prefix); ParseError if none can be."""
        config: dict[str, Any] = {}
        if self.layout == "flat":
            for key in sorted(flat):
                name = self.name_of(key)
                if not name:
                    raise ParseError(
                        f"the key {key.decode('utf-8', 'replace')!r} equals the prefix: it has no name"
                    )
                config[name] = self.decode_value(key, flat[key])
            return config
        # Nested: leaves[path] is the etcd key that set the value at path (for conflict reports).
        leaves: dict[tuple[str, ...], str] = {}
        inner: dict[tuple[str, ...], str] = {}  # path of each inner mapping -> a key below it
        for key in sorted(flat):
            name = self.name_of(key)
            text = key.decode("utf-8")
            parts = tuple(name.split(self.separator))
            if not name or "" in parts:
                raise ParseError(
                    f"the key {text!r} has an empty name segment (prefix {self.prefix.decode()!r})"
                )
            node = config
            for depth in range(1, len(parts)):
                path = parts[:depth]
                if path in leaves:
                    raise KeyConflictError(leaves[path], text, "the first is a value, the second is below it")
                inner.setdefault(path, text)
                node = node.setdefault(parts[depth - 1], {})
            if parts in inner:  # keys sort before their children, but be exact whatever the order
                raise KeyConflictError(text, inner[parts], "the first is a value, the second is below it")
            leaves[parts] = text
            node[parts[-1]] = self.decode_value(key, flat[key])
        return config
