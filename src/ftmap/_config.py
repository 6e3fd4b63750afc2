"""Hot-reloaded configuration: a source (a file, by default) kept current in a SnapshotMap.

A ConfigWatcher loads its source, parses and validates each new content off
to the side, and publishes only a valid one, with one ``store.replace``
(validate-then-swap: a reader never sees a torn or invalid config). On any
failure - a half-written or unsettled file, bad syntax, content past the
ConfigLimits, a rejected validation, a missing, unreadable or non-regular
file - the last good snapshot stays, the failure is recorded on ``status``
and reported to ``on_error`` and the "ftmap" logger.

Where the content comes from is a *source* (_config_source documents the
interface): ``ConfigWatcher(store, path)`` watches a file (_config_file:
regular files only, size-limited, published once settled; polling or
watchfiles events); ``ConfigWatcher(store, source)`` takes any other
ConfigSource, such as etcd, through the same machinery.

The guarantees, whatever the source:

- Offers are serialised, and a state older (in the source's order) than
  one already offered is never published over it: two ``reload()`` calls
  racing publish the newer read, never the older one after it.
- After ``stop()`` returns, nothing is published again: the stop flag is
  checked under the lock that publishes, and stop() takes that lock after
  setting it (see ``stop`` for what it waits for and returns).
- The validator's contract: ``validate(content)`` returns None, True or an
  empty list or tuple for valid; False or a non-empty list or tuple of
  messages for invalid (ValidationError); anything else is a broken
  validator (ValidatorError, also a TypeError), and so is raising an
  Exception (ValidationError, the exception chained). Nothing is published
  in either case.
- A BaseException that is not an Exception (KeyboardInterrupt, SystemExit
  ...) raised inside a load - by the validator, a callback or the source -
  stops the watcher: nothing more is published, the last good config stays,
  ``status`` and ``on_error`` get a WatcherStoppedError that chains it. On
  the watcher's thread the thread then ends; on a caller's thread
  (``reload()``, the constructor) it is also re-raised there.
- ``on_error``, ``on_reload`` and an Exception from them are logged, never
  fatal; they run on the thread that loaded, outside the watcher's locks,
  so they may call ``reload()``, ``status`` and ``stop()``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ._config_errors import (
    ConfigError,
    ConfigLimitError,
    EmptyConfigError,
    NotRegularFileError,
    ParseError,
    PublishError,
    SourceError,
    UnsettledError,
    ValidationError,
    ValidatorError,
    WatcherStoppedError,
)
from ._config_file import FileSource
from ._config_parse import (
    DEFAULT_LIMITS,
    ConfigLimits,
    check_format,
    check_structure,
    detect_format,
    parse_config,
)
from ._config_source import ConfigSource, Feed, Load, StopSignal
from ._snapshot import SnapshotMap

__all__ = [
    "ConfigError",
    "ConfigLimitError",
    "ConfigLimits",
    "ConfigSource",
    "ConfigWatcher",
    "EmptyConfigError",
    "Feed",
    "FileSource",
    "Load",
    "NotRegularFileError",
    "ParseError",
    "PublishError",
    "SourceError",
    "StopSignal",
    "UnsettledError",
    "ValidationError",
    "ValidatorError",
    "WatchStatus",
    "WatcherStoppedError",
    "detect_format",
    "parse_config",
]

log = logging.getLogger("ftmap")

_NOTHING: Any = object()  # no revision published / failed yet
_REVISIONS_KEPT = 1024  # revision_of() remembers this many versions
_FILE_OPTION_DEFAULTS = {"interval": 0.5, "quiet": 0.2, "max_delay": 2.0, "backend": "poll", "format": None}


@dataclass(frozen=True)
class WatchStatus:
    """What a ConfigWatcher has done so far (a copy: it does not change under you)."""

    version: int  # the store's version after the last good load
    reloads: int  # publishes from the source
    failures: int  # loads that failed (each distinct content, or each spell of the same trouble)
    checks: int  # times the source was looked at (offers and failures)
    last_success: float | None = None  # time.time() of the last publish
    last_error: ConfigError | OSError | None = None
    last_error_time: float | None = None
    revision: Hashable | None = None  # the source's revision of the published content (a file: its SHA-256)
    current_error: ConfigError | OSError | None = None  # the trouble now: None once a look finds all well
    running: bool = False  # the watching thread is alive
    stopped: bool = False  # stop() was called, or the watcher stopped itself (WatcherStoppedError)


class _StopView:
    """The watcher's stop event, read-only: what a source may wait on."""

    __slots__ = ("_event",)

    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)


class _Feed:
    """The Feed a ConfigWatcher hands its source: the only way in."""

    __slots__ = ("_watcher", "stop_signal")

    def __init__(self, watcher: ConfigWatcher) -> None:
        self._watcher = watcher
        self.stop_signal: StopSignal = _StopView(watcher._stopping)

    def stopping(self) -> bool:
        return self._watcher._stopping.is_set()

    def wait(self, seconds: float) -> bool:
        return self._watcher._stopping.wait(max(0.0, seconds))

    def offer(self, load: Load) -> bool:
        return self._watcher._offer(load)

    def fail(self, error: ConfigError | OSError, key: Hashable | None = None) -> None:
        self._watcher._source_failed(_as_reportable(error), key)


def _as_reportable(error: BaseException) -> ConfigError | OSError:
    if isinstance(error, ConfigError | OSError):
        return error
    wrapped = SourceError(f"{type(error).__name__}: {error}")
    wrapped.__cause__ = error
    return wrapped


class ConfigWatcher:
    """Keeps ``store`` equal to a config file (or any ConfigSource); see the module docstring.

    ``path`` is the file to watch, or a ConfigSource. For a file,
    ``format`` ("json", "toml", "yaml", "env"; else from the name),
    ``interval`` (seconds between looks), ``quiet`` (how long the bytes must
    stay the same before they are loaded), ``max_delay`` (how long a file may
    keep changing before that is reported as UnsettledError) and ``backend``
    ("poll", or "watchfiles" for the directory's events) apply; with another
    source they are the source's business (passing them is a TypeError).
    ``limits`` (ConfigLimits) bounds what one content may cost: bytes,
    depth, nodes, YAML aliases.

    ``validate(content)``: see the module docstring for its contract. An
    empty content never replaces a non-empty config unless ``allow_empty``.
    The initial load happens in the constructor; it raises what stopped it
    (a ConfigError or OSError) unless ``must_load=False``. ``start()``
    watches on a daemon thread until ``stop()``; as a context manager it
    starts and stops. ``reload()`` looks at once. ``on_error(error)`` and
    ``on_reload(version)`` report each failure and each publish.
    """

    def __init__(
        self,
        store: SnapshotMap[str, Any],
        path: str | os.PathLike[str] | ConfigSource,
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
        limits: ConfigLimits | None = None,
    ) -> None:
        if limits is not None and not isinstance(limits, ConfigLimits):
            raise TypeError(f"limits must be a ConfigLimits, not {type(limits).__name__}")
        self.limits = limits or DEFAULT_LIMITS
        if isinstance(path, str | os.PathLike):
            if backend not in ("poll", "watchfiles"):
                raise ValueError(f'backend must be "poll" or "watchfiles", not {backend!r}')
            self.source: ConfigSource = FileSource(
                path,
                check_format(format or detect_format(path)),
                limits=self.limits,
                interval=interval,
                quiet=quiet,
                max_delay=max_delay,
                backend=backend,
            )
        elif isinstance(path, ConfigSource):
            given = {"interval": interval, "quiet": quiet, "max_delay": max_delay, "backend": backend}
            given["format"] = format
            wrong = sorted(name for name, value in given.items() if value != _FILE_OPTION_DEFAULTS[name])
            if wrong:
                raise TypeError(f"{', '.join(wrong)}: options of a file; give them to the source instead")
            self.source = path
        else:
            raise TypeError(f"path must be a file path or a ConfigSource, not {type(path).__name__}")
        self.store = store
        self._validate = validate
        self._allow_empty = allow_empty
        self._on_error, self._on_reload = on_error, on_reload
        # _lock: guards the status and the bookkeeping fields below it; held briefly, never
        #   while user code runs.
        self._lock = threading.Lock()
        self._status = WatchStatus(version=store.version, reloads=0, failures=0, checks=0)
        self._applied: Hashable = _NOTHING  # the revision now published (from this watcher)
        self._failed: Hashable = _NOTHING  # the revision that failed last, if the last failure was one
        self._fail_key: Hashable = _NOTHING  # the key of the last failure (a spell counts once)
        self._last_order: int | None = None  # the greatest Load.order offered
        self._revisions: dict[int, Hashable] = {}  # store version -> source revision, newest last
        self._successes = 0  # publishes and confirmations: the watch backoff resets on progress
        # _load_lock: one offer (produce, check, validate, publish) at a time; _load_owner is
        #   the ident of the thread holding it (0: none), to refuse re-entry that would deadlock.
        self._load_lock = threading.Lock()
        self._load_owner = 0
        # _publish_lock: held while a publish checks _stopping and calls store.replace; stop()
        #   sets _stopping, then takes it: no publish begins after stop() has returned. An RLock
        #   so that stop() from a subscriber that this very publish is running still works.
        self._publish_lock = threading.RLock()
        self._stopping = threading.Event()  # set once, by stop() or an abort; never cleared
        self._thread: threading.Thread | None = None  # the watching thread, once started
        self._start_lock = threading.Lock()
        self._changed = threading.Condition()  # notified after every offer or failure
        self._feed = _Feed(self)
        self.reload()
        if must_load and self._applied is _NOTHING:
            with self._lock:
                error = self._status.last_error
            raise error if error is not None else ConfigError(f"{self.source.describe()}: nothing was loaded")

    # -- what the file options were (file sources only) ----------------------------------

    def _file(self) -> FileSource:
        if not isinstance(self.source, FileSource):
            raise AttributeError(f"this ConfigWatcher watches {self.source.describe()}, not a file")
        return self.source

    @property
    def path(self) -> Path:
        return self._file().path

    @property
    def format(self) -> str:
        return self._file().format

    @property
    def backend(self) -> str:
        return self._file().backend

    @property
    def interval(self) -> float:
        return self._file().interval

    @property
    def quiet(self) -> float:
        return self._file().quiet

    @property
    def max_delay(self) -> float:
        return self._file().max_delay

    # -- status ------------------------------------------------------------------------------

    @property
    def status(self) -> WatchStatus:
        with self._lock:
            status = self._status
        thread = self._thread
        return replace(
            status, running=thread is not None and thread.is_alive(), stopped=self._stopping.is_set()
        )

    def revision_of(self, version: int) -> Hashable | None:
        """The source revision that this watcher published as store version ``version`` (None if
        it published no such version, or it is older than the last 1,024 it published)."""
        with self._lock:
            return self._revisions.get(version)

    def wait_for(self, predicate: Callable[[WatchStatus], bool], timeout: float) -> bool:
        """Wait until predicate(status) holds (checked after every load or failure); False on timeout.

        The status records a publish or a failure before ``on_reload``/``on_error`` (and a
        store's subscribers see a publish after its readers can): a predicate that needs what a
        callback did must test that too. It is checked again after the callbacks have run.
        """
        # No loop inside the `with`: on CPython 3.13 a loop's back-edge there can fall outside
        # the exception table (python/cpython#130279), and a KeyboardInterrupt delivered on it
        # would leave _changed's lock held, blocking the watching thread's next notify for ever.
        # Condition.wait_for loops in its own frame: an exception there leaves through this call.
        with self._changed:
            return bool(self._changed.wait_for(lambda: predicate(self.status), timeout))

    def _changed_now(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- loading -------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Look at the source now; publish its content if it is new and loads cleanly. True if published.

        A file is first given ``quiet`` seconds to show that it has stopped
        changing. After stop(), reload() does nothing and returns False.
        """
        if self._stopping.is_set():
            return False
        with self._aborting_on_base_exceptions(reraise=True):
            try:
                load = self.source.load(self._feed)
            except Exception as error:
                self._source_failed(_as_reportable(error), None)
                return False
            return False if load is None else self._offer(load)

    @contextmanager
    def _aborting_on_base_exceptions(self, *, reraise: bool) -> Iterator[None]:
        try:
            yield
        except Exception:
            raise
        except BaseException as error:
            self._abort(error)
            if reraise:
                raise

    def _offer(self, load: Load) -> bool:
        if self._load_owner == threading.get_ident():
            raise RuntimeError(
                "a ConfigWatcher load from inside its own load (a validator or subscriber calling "
                "reload()) would deadlock"
            )
        while not self._load_lock.acquire(timeout=0.05):
            if self._stopping.is_set():
                return False
        self._load_owner = threading.get_ident()
        try:
            outcome = self._offer_locked(load)
        finally:
            self._load_owner = 0
            self._load_lock.release()
        return self._after(outcome)

    def _offer_locked(self, load: Load) -> tuple[str, Any]:
        """With _load_lock held: decide, produce, check, validate, publish. Returns what to report."""
        with self._lock:
            decided = self._decide_locked(load)
        if decided is not None:
            return (decided, None)
        try:
            content = self._produce(load)
        except ConfigError as error:
            return self._record_failure(error, ("revision", load.revision), load.revision)
        with self._publish_lock:
            if self._stopping.is_set():
                return ("stopped", None)  # stop() has begun: this load is abandoned, not a failure
            with self._lock:
                predicted = self.store.version + 1
                self._remember_locked(predicted, load.revision)  # before readers can see it
            try:
                version = self.store.replace(content)
            except Exception as error:
                with self._lock:
                    self._revisions.pop(predicted, None)
                failure = PublishError(f"publishing failed: {type(error).__name__}: {error}")
                failure.__cause__ = error
                return self._record_failure(failure, ("revision", load.revision), load.revision)
            with self._lock:
                if version != predicted:  # another writer published in between
                    self._revisions.pop(predicted, None)
                    self._remember_locked(version, load.revision)
                self._applied, self._failed = load.revision, _NOTHING
                self._confirm_locked()
                self._status = replace(
                    self._status,
                    version=version,
                    reloads=self._status.reloads + 1,
                    last_success=time.time(),
                    revision=load.revision,
                )
        return ("published", version)

    def _decide_locked(self, load: Load) -> str | None:
        """With _lock held: what to do with an offer before producing it (None: produce it)."""
        self._status = replace(self._status, checks=self._status.checks + 1)
        order, last = load.order, self._last_order
        if (
            order is not None
            and last is not None
            and (order < last or (order == last and load.revision != self._applied))
        ):
            return "stale"
        if order is not None:
            self._last_order = order
        if load.revision == self._applied:
            self._confirm_locked()
            return "current"
        if load.revision == self._failed:
            return "known bad"
        return None

    def _confirm_locked(self) -> None:
        self._fail_key = _NOTHING
        self._successes += 1
        if self._status.current_error is not None:
            self._status = replace(self._status, current_error=None)

    def _remember_locked(self, version: int, revision: Hashable) -> None:
        self._revisions[version] = revision
        while len(self._revisions) > _REVISIONS_KEPT:
            del self._revisions[next(iter(self._revisions))]

    def _produce(self, load: Load) -> dict[str, Any]:
        """The load's content, checked and validated, ready to publish; raises ConfigError if not."""
        try:
            produced = load.content() if callable(load.content) else load.content
        except ConfigError:
            raise
        except Exception as error:
            failure = ParseError(f"{self.source.describe()}: {type(error).__name__}: {error}")
            raise failure from error
        if not isinstance(produced, Mapping):
            raise ParseError(f"the top level of a config must be a mapping, not {type(produced).__name__}")
        check_structure(produced, self.limits)
        content = dict(produced)
        if self._validate is not None:
            self._run_validator(content)
        if not content and len(self.store) and not self._allow_empty:
            raise EmptyConfigError(f"{self.source.describe()} has an empty config; kept the current one")
        return content

    def _run_validator(self, content: dict[str, Any]) -> None:
        assert self._validate is not None
        try:
            verdict = self._validate(content)
        except ConfigError:
            raise
        except Exception as error:  # a validator that raised: its exception is the reason
            raise ValidationError([f"{type(error).__name__}: {error}"]) from error
        if verdict is None or verdict is True:
            return
        if verdict is False:
            raise ValidationError(["validate returned False"])
        if isinstance(verdict, list | tuple):
            if verdict:
                raise ValidationError([str(problem) for problem in verdict])
            return
        raise ValidatorError(
            [
                "validate must return None, a bool, or a list or tuple of error messages, "
                f"not {type(verdict).__name__} {_short(verdict)}"
            ]
        )

    def _source_failed(self, error: ConfigError | OSError, key: Hashable | None) -> None:
        with self._lock:
            self._status = replace(self._status, checks=self._status.checks + 1)
        self._after(self._record_failure(error, key, _NOTHING))

    def _record_failure(
        self, error: ConfigError | OSError, key: Hashable | None, revision: Hashable
    ) -> tuple[str, Any]:
        with self._lock:
            repeated = key is not None and key == self._fail_key
            self._fail_key = key if key is not None else object()
            self._failed = revision
            self._status = replace(self._status, current_error=error)
            if repeated:
                return ("repeated failure", error)
            self._status = replace(
                self._status,
                failures=self._status.failures + 1,
                last_error=error,
                last_error_time=time.time(),
            )
        return ("failed", error)

    def _after(self, outcome: tuple[str, Any]) -> bool:
        """Report an offer's or a failure's outcome, outside every lock of the watcher."""
        what, detail = outcome
        if what == "published":
            self._notify(self._on_reload, detail)
        elif what == "failed":
            log.warning(
                "config from %s not loaded, keeping version %d: %s",
                self.source.describe(),
                self.store.version,
                detail,
            )
            self._notify(self._on_error, detail)
        self._changed_now()
        return what == "published"

    def _notify(self, callback: Callable[[Any], object] | None, argument: Any) -> None:
        if callback is None:
            return
        try:
            callback(argument)
        except Exception:
            log.exception("ConfigWatcher callback %r failed", callback)

    def _abort(self, cause: BaseException) -> None:
        """A BaseException that is not an Exception was raised inside a load: stop, and say so."""
        error = WatcherStoppedError(
            f"the watcher of {self.source.describe()} stopped: {_short(cause)} "
            "was raised inside a load; the last good config was kept"
        )
        error.__cause__ = cause
        self._stopping.set()
        with self._lock:
            self._status = replace(
                self._status,
                failures=self._status.failures + 1,
                last_error=error,
                last_error_time=time.time(),
                current_error=error,
            )
        log.error("%s", error)
        self._close_source()
        try:
            if self._on_error is not None:
                self._on_error(error)
        except BaseException:
            log.exception("ConfigWatcher on_error callback %r failed", self._on_error)
        self._changed_now()

    # -- watching --------------------------------------------------------------------------------

    def start(self) -> ConfigWatcher:
        """Begin watching on a daemon thread (idempotent). A stopped watcher cannot start again."""
        with self._start_lock:
            if self._stopping.is_set():
                raise RuntimeError("this ConfigWatcher was stopped; make a new one to watch again")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"ftmap-watch:{self.source.describe()}", daemon=True
                )
                self._thread.start()
        self._changed_now()
        return self

    def _run(self) -> None:
        # The loop is in its own function: on CPython 3.13 a loop back-edge inside the `with`
        # can fall outside the exception table (python/cpython#130279), and an asynchronous
        # exception delivered there would end the thread without the abort being reported.
        with self._aborting_on_base_exceptions(reraise=False):
            self._watch_until_stopped()

    def _watch_until_stopped(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            progress = self._successes
            try:
                self.source.watch(self._feed)
                return  # stopping, or the source has nothing more to watch
            except Exception as error:
                if self._stopping.is_set():
                    return
                log.debug("ConfigWatcher source %s raised", self.source.describe(), exc_info=True)
                self._source_failed(_as_reportable(error), ("watch raised", type(error).__name__, str(error)))
            if self._successes != progress:
                delay = 0.1
            if self._stopping.wait(delay):
                return
            delay = min(5.0, delay * 2)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop watching: after stop() returns, nothing is ever published again.

        It sets the stop flag (a load that has not begun publishing will not
        publish), closes the source, waits for a publish already under way
        to finish (so that it cannot land afterwards) and for the watching
        thread to end, all within ``timeout`` seconds. Returns True if the
        thread has ended (or was never started, or stop() was called on it,
        from a callback or the validator: it ends when that returns), False
        if it is still running at the timeout - a validator, a parser or a
        callback that has not returned yet; it publishes nothing when it
        does, and the thread then ends. Never raises; idempotent.
        """
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._close_source()
        publishing_done = self._publish_lock.acquire(timeout=max(0.0, timeout))
        if publishing_done:
            self._publish_lock.release()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
        self._changed_now()
        ended = thread is None or thread is threading.current_thread() or not thread.is_alive()
        if not (publishing_done and ended):
            log.warning(
                "ConfigWatcher of %s: still %s after stop(timeout=%g); it will publish nothing",
                self.source.describe(),
                "publishing" if not publishing_done else "loading",
                timeout,
            )
        return publishing_done and ended

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception:
            log.exception("ConfigWatcher source %s failed to close", self.source.describe())

    def __enter__(self) -> ConfigWatcher:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _short(value: object, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
