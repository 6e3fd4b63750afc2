"""Hot-reloaded configuration: a file kept current in a SnapshotMap.

A ConfigWatcher reads the file, parses and validates it off to the side, and
publishes only a valid result; on any failure (a half-written file, bad
syntax, a rejected validation, a missing file, a permission error) the last
good snapshot stays, the failure is recorded on ``status`` and reported to
``on_error``.

Watching polls with the standard library by default, or follows the
directory's events with watchfiles (``backend="watchfiles"``, the ``watch``
extra), which sees a change at once. Either way each look opens the path
afresh, so whatever the path now names is what is read: an editor's atomic
save (write a temporary file, rename it over), delete-then-recreate, and a
Kubernetes ConfigMap's ``..data`` symlink swap are all just "the bytes
changed". Change is decided by content (a SHA-256 of the bytes), never by
mtime. A burst of writes is debounced: once the bytes change, they must stay
the same for ``quiet`` seconds (but no longer than ``max_delay`` after the
first change) before they are loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from ._snapshot import SnapshotMap

__all__ = [
    "ConfigError",
    "ConfigWatcher",
    "EmptyConfigError",
    "ParseError",
    "ValidationError",
    "WatchStatus",
    "detect_format",
    "parse_config",
]

log = logging.getLogger("ftmap")


class ConfigError(Exception):
    """A configuration file could not be loaded; the last good config was kept."""


class ParseError(ConfigError):
    """The file is not valid in its format (or was read half-written)."""


class ValidationError(ConfigError):
    """The validate callable rejected the parsed content: ``errors`` says why."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("validation failed: " + "; ".join(errors))


class EmptyConfigError(ConfigError):
    """The file parsed to nothing while the current config is not empty (allow_empty=False)."""


def _parse_env(text: str) -> dict[str, str]:
    """KEY=VALUE lines (.env): blank lines and # comments skipped, ``export`` allowed,
    values optionally quoted; an unquoted value ends at `` #``."""
    result: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not key.replace("_", "a").replace(".", "a").isalnum():
            raise ParseError(f"line {number}: expected KEY=VALUE, got {raw!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        result[key] = value
    return result


def _parse_yaml(text: str) -> Any:
    try:
        import yaml  # type: ignore[import-untyped, unused-ignore]  # noqa: PLC0415  (optional)
    except ImportError as error:
        raise ParseError("YAML needs PyYAML: pip install pyyaml") from error
    return yaml.safe_load(text)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "json": json.loads,
    "toml": tomllib.loads,
    "yaml": _parse_yaml,
    "env": _parse_env,
}
_SUFFIXES = {".json": "json", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".env": "env"}


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format a file name implies: .json, .toml, .yaml/.yml, .env (or a file named .env)."""
    name = Path(path).name
    if name == ".env" or name.startswith(".env."):
        return "env"
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"cannot tell the format of {name!r}: give format= one of {sorted(_PARSERS)}")
    return _SUFFIXES[suffix]


def parse_config(data: bytes, format: str) -> dict[str, Any]:
    """Parse a config file's bytes; ParseError if they are not a valid mapping in that format."""
    if format not in _PARSERS:
        raise ValueError(f"format must be one of {sorted(_PARSERS)}, not {format!r}")
    try:
        parsed = _PARSERS[format](data.decode("utf-8"))
    except ParseError:
        raise
    except Exception as error:  # each parser has its own error types
        raise ParseError(f"invalid {format}: {error}") from error
    if parsed is None:  # an empty YAML document
        parsed = {}
    if not isinstance(parsed, Mapping):
        raise ParseError(f"the top level of a config must be a mapping, not {type(parsed).__name__}")
    return dict(parsed)


@dataclass(frozen=True)
class WatchStatus:
    """What a ConfigWatcher has done so far (a copy: it does not change under you)."""

    version: int  # the store's version after the last good load
    reloads: int  # publishes from the file
    failures: int  # loads that failed (each distinct content, or each missing/unreadable spell)
    checks: int  # times the file was looked at
    last_success: float | None = None  # time.time() of the last publish
    last_error: ConfigError | OSError | None = None
    last_error_time: float | None = None


class ConfigWatcher:
    """Keeps ``store`` equal to the config file at ``path``; see the module docstring.

    ``validate(content)`` may raise, or return a list of error strings (empty
    or None: valid). The initial load happens in the constructor (it raises
    the ConfigError or OSError if the file cannot be loaded, unless
    ``must_load=False``). ``start()`` begins polling every ``interval``
    seconds on a daemon thread; ``stop()`` ends it; as a context manager it
    starts and stops. ``reload()`` checks at once, without debouncing.
    ``on_error(error)`` and ``on_reload(version)`` are called on the thread
    that loaded; an exception from them is logged, never fatal.
    ``backend`` is "poll" (the standard library, every ``interval`` seconds)
    or "watchfiles" (events on the file's directory, grouped for ``quiet``
    seconds and at most ``max_delay``, and a look every ``interval`` seconds
    besides, should an event be missed).
    """

    def __init__(
        self,
        store: SnapshotMap[str, Any],
        path: str | os.PathLike[str],
        *,
        format: str | None = None,
        validate: Callable[[dict[str, Any]], object] | None = None,
        allow_empty: bool = False,
        interval: float = 0.5,
        quiet: float = 0.2,
        max_delay: float = 2.0,
        on_error: Callable[[Exception], object] | None = None,
        on_reload: Callable[[int], object] | None = None,
        must_load: bool = True,
        backend: str = "poll",
    ) -> None:
        if backend not in ("poll", "watchfiles"):
            raise ValueError(f'backend must be "poll" or "watchfiles", not {backend!r}')
        if backend == "watchfiles":
            try:
                import watchfiles  # noqa: F401, PLC0415  (optional: the watch extra)
            except ImportError as error:
                raise ImportError(
                    'backend="watchfiles" needs watchfiles: pip install ftmap[watch]'
                ) from error
        self.backend = backend
        self.store = store
        self.path = Path(path)
        self.format = format or detect_format(path)
        if self.format not in _PARSERS:
            raise ValueError(f"format must be one of {sorted(_PARSERS)}, not {self.format!r}")
        self._validate = validate
        self._allow_empty = allow_empty
        self.interval, self.quiet, self.max_delay = interval, quiet, max_delay
        self._on_error, self._on_reload = on_error, on_reload
        self._lock = threading.Lock()  # one load at a time; guards the fields below
        self._applied: str | None = None  # digest of the content now published
        self._failed: str | None = None  # digest of the content that last failed
        self._unreadable = False  # the last look failed to read the file
        self._status = WatchStatus(version=store.version, reloads=0, failures=0, checks=0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()
        self.reload()
        if must_load and self._applied is None and self._status.last_error is not None:
            raise self._status.last_error

    # -- loading --------------------------------------------------------------------

    @property
    def status(self) -> WatchStatus:
        with self._lock:
            return self._status

    def _read(self) -> bytes:
        with open(self.path, "rb") as file:  # opened afresh: follows whatever the path names now
            return file.read()

    def reload(self) -> bool:
        """Look at the file now; publish it if its content changed and loads cleanly. True if published."""
        try:
            data = self._read()
        except OSError as error:
            return self._fail(error, None)
        return self._load(data)

    def _load(self, data: bytes) -> bool:
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._status = replace(self._status, checks=self._status.checks + 1)
            self._unreadable = False
            if digest in (self._applied, self._failed):
                return False  # seen already: by content, whatever mtime says
        try:
            content = parse_config(data, self.format)
            if self._validate is not None:
                problems = self._validate(content)
                if problems:
                    raise ValidationError([str(p) for p in cast(Iterable[object], problems)])
            if not content and len(self.store) and not self._allow_empty:
                raise EmptyConfigError(f"{self.path} parsed to an empty config; kept the current one")
        except ConfigError as error:
            return self._fail(error, digest)
        except Exception as error:  # a validator that raised: its exception is the reason
            return self._fail(ValidationError([f"{type(error).__name__}: {error}"]), digest)
        version = self.store.replace(content)
        with self._lock:
            self._applied, self._failed = digest, None
            self._status = replace(
                self._status, version=version, reloads=self._status.reloads + 1, last_success=time.time()
            )
        self._notify(self._on_reload, version)
        with self._changed:
            self._changed.notify_all()
        return True

    def _fail(self, error: ConfigError | OSError, digest: str | None) -> bool:
        with self._lock:
            repeated = (digest is None and self._unreadable) or (
                digest is not None and digest == self._failed
            )
            if digest is None:
                self._unreadable = True
                self._status = replace(self._status, checks=self._status.checks + 1)
            else:
                self._failed = digest
            if not repeated:
                self._status = replace(
                    self._status,
                    failures=self._status.failures + 1,
                    last_error=error,
                    last_error_time=time.time(),
                )
        if not repeated:
            log.warning("config %s not loaded, keeping version %d: %s", self.path, self.store.version, error)
            self._notify(self._on_error, error)
            with self._changed:
                self._changed.notify_all()
        return False

    def _notify(self, callback: Callable[[Any], object] | None, argument: Any) -> None:
        if callback is None:
            return
        try:
            callback(argument)
        except Exception:
            log.exception("ConfigWatcher callback %r failed", callback)

    def wait_for(self, predicate: Callable[[WatchStatus], bool], timeout: float) -> bool:
        """Wait until predicate(status) holds (checked after every load or failure); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.status):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    # -- watching ---------------------------------------------------------------------

    def start(self) -> ConfigWatcher:
        """Begin polling on a daemon thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            body = self._poll if self.backend == "poll" else self._follow_events
            self._thread = threading.Thread(target=body, name=f"ftmap-watch:{self.path.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling and wait for the thread to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> ConfigWatcher:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _follow_events(self) -> None:
        from watchfiles import watch  # noqa: PLC0415  (checked importable in __init__)

        while not self._stop.is_set():
            try:
                for _ in watch(
                    self.path.parent,
                    stop_event=self._stop,
                    debounce=max(1, int(self.max_delay * 1000)),
                    step=max(1, int(self.quiet * 1000)),
                    rust_timeout=max(1, int(self.interval * 1000)),
                    yield_on_timeout=True,  # a look every interval too, should an event be missed
                    recursive=False,
                ):
                    self.reload()
            except Exception:
                # Never dies silently: log, breathe, and watch again.
                log.exception("ConfigWatcher for %s: the watchfiles backend failed; restarting it", self.path)
                self._stop.wait(self.interval)

    def _poll(self) -> None:
        # Never dies silently: anything unexpected is logged and polling goes on.
        pending: bytes | None = None  # changed content waiting for a quiet window
        first_seen = last_change = 0.0
        while not self._stop.wait(self.interval):
            try:
                try:
                    data = self._read()
                except OSError as error:
                    pending = None
                    self._fail(error, None)
                    continue
                now = time.monotonic()
                if pending is None or data != pending:
                    if pending is None:
                        first_seen = now
                    pending, last_change = data, now
                if now - last_change >= self.quiet or now - first_seen >= self.max_delay:
                    self._load(pending)
                    pending = None
            except Exception:
                log.exception("ConfigWatcher for %s: unexpected error; still watching", self.path)
