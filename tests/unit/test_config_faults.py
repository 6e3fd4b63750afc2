"""The ConfigWatcher fault-injection suite: every way a file, a writer or a callback goes wrong.

Each case runs with both backends ("poll" and "watchfiles") against real
files and real processes, and asserts the same four things (``refused``
and ``stops_cleanly``): the last good config is kept, the error is on
``status`` (``last_error`` and ``current_error``) and was given to
``on_error``, the watcher is alive (or, where a case stops it, stopped
cleanly), and ``stop()`` returns True with the thread gone. Then the file is
fixed and the fix must be published. Anything that could hang (a FIFO, a
stop, a constructor) runs on another thread with a timeout (tests/threads.py).

The regression tests of issue 13's breaks 7-10 are marked "break N"; each
failed against the code before the fix (see the commit message).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import ftmap
from ftmap import ConfigWatcher, EmptyConfigError, ParseError, SnapshotMap, ValidationError, WatchStatus
from ftmap._config import (
    ConfigLimitError,
    ConfigLimits,
    NotRegularFileError,
    PublishError,
    UnsettledError,
    ValidatorError,
    WatcherStoppedError,
)
from tests.threads import InThread, within
from tests.unit.test_config import reachable_by_everyone, write_atomically

pytestmark = pytest.mark.thread_unsafe(reason="files, processes, watcher threads and timing")

FAST: dict[str, Any] = {"interval": 0.01, "quiet": 0.05, "max_delay": 1.0}
WAIT = 10.0  # seconds any expected report may take on a loaded machine


@pytest.fixture(params=["poll", "watchfiles"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "watchfiles":
        pytest.importorskip("watchfiles")
    return str(request.param)


@dataclass
class Watched:
    """A watcher with everything it reported: on_error, and every snapshot it published."""

    watcher: ConfigWatcher
    errors: list[Exception] = field(default_factory=list)
    published: list[dict[str, Any]] = field(default_factory=list)

    @property
    def store(self) -> SnapshotMap[str, Any]:
        return self.watcher.store

    def reloads(self, count: int) -> None:
        assert self.watcher.wait_for(lambda s: s.reloads >= count, WAIT), self.watcher.status


def watched(path: Path, backend: str = "poll", start: bool = True, **options: Any) -> Watched:
    errors: list[Exception] = []
    store: SnapshotMap[str, Any] = SnapshotMap()
    result = Watched(
        ConfigWatcher(store, path, on_error=errors.append, backend=backend, **{**FAST, **options})
    )
    result.errors = errors
    store.subscribe(lambda change: result.published.append(dict(change.new)))
    if start:
        result.watcher.start()
    return result


def refused(w: Watched, good: dict[str, Any], error_type: type[BaseException], *, alive: bool = True) -> None:
    """The fault was reported on status and to on_error, and the last good config was kept."""
    watcher = w.watcher

    # on_error runs after the status records the failure; the watcher notifies wait_for after both.
    def reported(s: WatchStatus) -> bool:
        return isinstance(s.current_error, error_type) and any(isinstance(e, error_type) for e in w.errors)

    assert watcher.wait_for(reported, WAIT), (watcher.status, w.errors)
    status = watcher.status
    assert isinstance(status.last_error, error_type), status
    assert status.failures >= 1
    assert any(isinstance(e, error_type) for e in w.errors), w.errors
    assert w.store == good
    assert all(snapshot == good for snapshot in w.published), w.published  # nothing else was published
    assert status.running is alive, status


def recovers(w: Watched, good: dict[str, Any]) -> None:
    """Once the file is fixed, the fix is published and the trouble is over."""
    watcher = w.watcher
    assert watcher.wait_for(lambda s: watcher.store == good and s.current_error is None, WAIT), watcher.status


def stops_cleanly(w: Watched) -> None:
    assert within(WAIT, w.watcher.stop) is True
    thread = w.watcher._thread
    assert thread is None or not thread.is_alive()
    status = w.watcher.status
    assert status.stopped and not status.running
    version = w.store.version
    assert not w.watcher.reload()  # after stop(), nothing is ever published again
    assert w.store.version == version


@pytest.fixture
def watched_cleanup() -> Iterator[list[Watched]]:
    """Stops whatever a failing test left running."""
    made: list[Watched] = []
    yield made
    for w in made:
        w.watcher.stop(timeout=1)


# -- content faults: the cases that held before, kept holding --------------------------------------


CONTENT_FAULTS: dict[str, tuple[bytes, type[Exception]]] = {
    "truncated mid-file": (b'{"v": 2, "pad": "xx', ParseError),
    "truncated to nothing": (b"", ParseError),
    "emptied": (b"{}", EmptyConfigError),
    "invalid UTF-8": (b'{"v": "\xff\xfe"}', ParseError),
    "not a mapping": (b"[1, 2, 3]", ParseError),
    "nested 700 deep (break 8)": (b'{"v": ' + b"[" * 700 + b"]" * 700 + b"}", ConfigLimitError),
    "nested 3,000 deep (break 8)": (b'{"v": ' + b"[" * 3000 + b"]" * 3000 + b"}", ConfigLimitError),
    "nested 200,000 deep": (b'{"v": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", ConfigLimitError),
    "larger than max_bytes": (b'{"v": "' + b"x" * 1_100_000 + b'"}', ConfigLimitError),
}


@pytest.mark.parametrize("case", list(CONTENT_FAULTS))
def test_bad_content_is_refused_and_the_fix_published(
    tmp_path: Path, backend: str, case: str, watched_cleanup: list[Watched]
) -> None:
    data, error_type = CONTENT_FAULTS[case]
    path = tmp_path / "app.json"
    path.write_text('{"v": 1}')
    w = watched(path, backend, limits=ConfigLimits(max_bytes=1_000_000))
    watched_cleanup.append(w)
    temporary = tmp_path / "app.json.tmp"
    temporary.write_bytes(data)
    os.replace(temporary, path)
    refused(w, {"v": 1}, error_type)
    write_atomically(path, '{"v": 3}')
    recovers(w, {"v": 3})
    stops_cleanly(w)


def test_a_byte_order_mark_is_skipped(tmp_path: Path, backend: str, watched_cleanup: list[Watched]) -> None:
    # Decided: a UTF-8 BOM (Windows editors write one) is not part of the content, in any format.
    path = tmp_path / ".env"
    path.write_bytes(b"\xef\xbb\xbfA=1\n")
    w = watched(path, backend)
    watched_cleanup.append(w)
    assert w.store == {"A": "1"}
    temporary = tmp_path / "env.tmp"
    temporary.write_bytes(b"\xef\xbb\xbfA=2\n")
    os.replace(temporary, path)
    recovers(w, {"A": "2"})
    assert w.errors == []
    stops_cleanly(w)


YAML_FAULTS: dict[str, tuple[str, type[Exception]]] = {
    "a self-referencing alias (break 8)": ("v: &a [1, *a]\n", ParseError),
    "a mapping that merges itself (break 8)": ("v: &m {<<: *m}\n", ParseError),
    "an alias bomb (break 8)": (
        'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
        + "".join(
            f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for n, p in zip("bcdefghi", "abcdefgh", strict=True)
        )
        + "v: *i\n",
        ConfigLimitError,
    ),
    "a merge-key bomb": (
        "m0: &m0 {a: 1}\n" + "".join(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}\n" for i in range(1, 40)),
        ConfigLimitError,
    ),
    "too many aliases": ("a: &a 1\nv: [" + ", ".join(["*a"] * 1001) + "]\n", ConfigLimitError),
    "nested 3,000 deep (break 8)": ("v: " + "[" * 3000 + "]" * 3000 + "\n", ConfigLimitError),
}


@pytest.mark.parametrize("case", list(YAML_FAULTS))
def test_hostile_yaml_is_refused_quickly(
    tmp_path: Path, backend: str, case: str, watched_cleanup: list[Watched]
) -> None:
    pytest.importorskip("yaml")
    text, error_type = YAML_FAULTS[case]
    assert len(text.encode()) < 8000  # a few hundred bytes, a few kB at most
    path = tmp_path / "app.yaml"
    path.write_text("v: 1\n")
    w = watched(path, backend)
    watched_cleanup.append(w)
    started = time.monotonic()
    write_atomically(path, text)
    refused(w, {"v": 1}, error_type)
    assert time.monotonic() - started < WAIT  # refused before it was expanded (that took 20-100+ s)
    write_atomically(path, "v: 2\n")
    recovers(w, {"v": 2})
    stops_cleanly(w)


def test_the_constructor_refuses_deep_nesting_as_a_config_error(tmp_path: Path) -> None:
    # break 8: it raised a bare RecursionError, and from_file too.
    path = tmp_path / "deep.json"
    path.write_text('{"v": ' + "[" * 3000 + "]" * 3000 + "}")
    with pytest.raises(ConfigLimitError) as raised:
        within(WAIT, lambda: ConfigWatcher(SnapshotMap(), path))
    assert raised.value.limit == "max_depth" and raised.value.maximum == 100
    with pytest.raises(ConfigLimitError):
        within(WAIT, lambda: SnapshotMap.from_file(path))
    shallower = tmp_path / "shallower.json"
    shallower.write_text('{"v": ' + "[" * 119 + "]" * 119 + "}")
    assert len(ConfigWatcher(SnapshotMap(), shallower, limits=ConfigLimits(max_depth=120)).store) == 1
    # A limit raised past what publishing (freezing) can recurse through is still reported.
    errors: list[Exception] = []
    watcher = ConfigWatcher(
        SnapshotMap(), path, limits=ConfigLimits(max_depth=5000), must_load=False, on_error=errors.append
    )
    # (Refused by the parser's own recursion limit on some builds, by publishing on others.)
    assert isinstance(watcher.status.last_error, PublishError | ConfigLimitError)
    # The cause: the parser's RecursionError, or freeze's ValueError (it turns a RecursionError
    # into "nested more deeply than the recursion limit allows").
    cause = errors[0].__cause__ if errors == [watcher.status.last_error] else None
    from_freeze = isinstance(cause, ValueError) and "recursion limit" in str(cause)
    assert isinstance(cause, RecursionError) or from_freeze, cause
    cause.__traceback__ = None  # thousands of frames: too long to show if this fails


# -- what the path names: only regular files are read -------------------------------------------------


def release_fifo_readers(path: Path) -> None:
    """Open a FIFO for writing and close it: a reader blocked opening it wakes up (and reads EOF)."""
    with contextlib.suppress(OSError):  # ENXIO: nobody was blocked reading it
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def test_a_fifo_is_refused_not_read(tmp_path: Path, backend: str, watched_cleanup: list[Watched]) -> None:
    # break 9: the watcher blocked in open() for ever, stop() returned with the thread alive,
    # the constructor hung.
    path = tmp_path / "app.json"
    path.write_text('{"v": 1}')
    w = watched(path, backend)
    watched_cleanup.append(w)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    try:
        os.replace(fifo, path)
        refused(w, {"v": 1}, NotRegularFileError)
        assert w.watcher.status.last_error.kind == "FIFO"  # type: ignore[union-attr]
        with pytest.raises(NotRegularFileError):
            within(WAIT, lambda: ConfigWatcher(SnapshotMap(), path))
        write_atomically(path, '{"v": 2}')
        recovers(w, {"v": 2})
        stops_cleanly(w)
    finally:
        if path.exists() and not path.is_file():
            release_fifo_readers(path)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_a_symlink_to_a_device_is_refused_not_read(
    tmp_path: Path, backend: str, device: str, watched_cleanup: list[Watched]
) -> None:
    # break 9: /dev/zero was read until MemoryError on every poll, never reported.
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    path = tmp_path / "app.json"
    path.write_text('{"v": 1}')
    w = watched(path, backend)
    watched_cleanup.append(w)
    link = tmp_path / "link"
    link.symlink_to(device)
    os.replace(link, path)
    refused(w, {"v": 1}, NotRegularFileError)
    with pytest.raises(NotRegularFileError):
        within(WAIT, lambda: ConfigWatcher(SnapshotMap(), path))
    write_atomically(path, '{"v": 2}')
    recovers(w, {"v": 2})
    stops_cleanly(w)


def test_a_directory_in_place_of_the_file(
    tmp_path: Path, backend: str, watched_cleanup: list[Watched]
) -> None:
    path = tmp_path / "app.toml"
    path.write_text("v = 1\n")
    w = watched(path, backend)
    watched_cleanup.append(w)
    path.unlink()
    path.mkdir()
    refused(w, {"v": 1}, NotRegularFileError)
    path.rmdir()
    path.write_text("v = 2\n")
    recovers(w, {"v": 2})
    stops_cleanly(w)


@pytest.mark.parametrize("how", ["deleted", "dangling symlink"])
def test_a_missing_file(tmp_path: Path, backend: str, how: str, watched_cleanup: list[Watched]) -> None:
    path = tmp_path / "app.json"
    path.write_text('{"v": 1}')
    w = watched(path, backend)
    watched_cleanup.append(w)
    path.unlink()
    if how == "dangling symlink":
        path.symlink_to(tmp_path / "nowhere.json")
    refused(w, {"v": 1}, FileNotFoundError)
    failures = w.watcher.status.failures
    assert not w.watcher.wait_for(lambda s: s.failures > failures, 0.3)  # one spell, one failure
    write_atomically(path, '{"v": 2}')
    recovers(w, {"v": 2})
    stops_cleanly(w)


# -- directories, swaps and writers -----------------------------------------------------------------------


def test_kubernetes_swap_to_a_bad_version_and_back(
    tmp_path: Path, backend: str, watched_cleanup: list[Watched]
) -> None:
    for version, text in (("..v1", '{"v": 1}'), ("..v2", '{"v": '), ("..v3", '{"v": 3}')):
        (tmp_path / version).mkdir()
        (tmp_path / version / "app.json").write_text(text)
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "app.json").symlink_to("..data/app.json")
    w = watched(tmp_path / "app.json", backend)
    watched_cleanup.append(w)

    def swap(to: str) -> None:
        (tmp_path / "..data_tmp").symlink_to(to)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")

    swap("..v2")
    refused(w, {"v": 1}, ParseError)
    swap("..v3")
    recovers(w, {"v": 3})
    stops_cleanly(w)


def test_the_directory_deleted_and_recreated(
    tmp_path: Path, backend: str, watched_cleanup: list[Watched]
) -> None:
    directory = tmp_path / "conf"
    directory.mkdir()
    path = directory / "app.json"
    path.write_text('{"v": 1}')
    w = watched(path, backend)
    watched_cleanup.append(w)
    shutil.rmtree(directory)
    refused(w, {"v": 1}, FileNotFoundError)
    directory.mkdir()
    path.write_text('{"v": 2}')
    recovers(w, {"v": 2})
    write_atomically(path, '{"v": 3}')  # and the new directory is watched
    recovers(w, {"v": 3})
    stops_cleanly(w)


def test_watchfiles_reports_a_directory_that_is_gone_when_it_starts(
    tmp_path: Path, watched_cleanup: list[Watched]
) -> None:
    # break 10: with the directory gone, watchfiles failed to start, logged it and retried for
    # ever; status said failures=0.
    pytest.importorskip("watchfiles")
    directory = tmp_path / "conf"
    directory.mkdir()
    path = directory / "app.json"
    path.write_text('{"v": 1}')
    w = watched(path, "watchfiles", start=False)
    watched_cleanup.append(w)
    shutil.rmtree(directory)
    w.watcher.start()
    refused(w, {"v": 1}, FileNotFoundError)
    assert str(directory) in str(w.watcher.status.last_error)
    directory.mkdir()
    path.write_text('{"v": 2}')
    recovers(w, {"v": 2})
    stops_cleanly(w)


def test_two_watchers_on_one_file(tmp_path: Path, backend: str, watched_cleanup: list[Watched]) -> None:
    path = tmp_path / "app.json"
    path.write_text('{"v": 1}')
    first, second = watched(path, backend), watched(path, backend)
    watched_cleanup.extend((first, second))
    write_atomically(path, '{"v": ')
    for w in (first, second):
        refused(w, {"v": 1}, ParseError)
    write_atomically(path, '{"v": 2}')
    for w in (first, second):
        recovers(w, {"v": 2})
        stops_cleanly(w)


REWRITER = textwrap.dedent(
    """
    import json, os, sys
    path, count = sys.argv[1], int(sys.argv[2])
    for i in range(1, count + 1):
        last = i == count
        if i % 7 == 0 and not last:
            text = '{"a": 1, "b":'                     # bad syntax
        elif i % 5 == 0 and not last:
            text = json.dumps({"a": i, "b": i})        # fails validation
        else:
            text = json.dumps({"a": i, "b": 2 * i})
        temporary = f"{path}.{i}.tmp"
        with open(temporary, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    """
)


def test_rapid_rewrites_by_another_process(
    tmp_path: Path, backend: str, watched_cleanup: list[Watched]
) -> None:
    path = tmp_path / "app.json"
    path.write_text(json.dumps({"a": 0, "b": 0}))

    def validate(config: dict[str, Any]) -> list[str]:
        return [] if config.get("b") == 2 * config.get("a", -1) else ["b must be 2 * a"]

    w = watched(path, backend, validate=validate, quiet=0.01)
    watched_cleanup.append(w)
    subprocess.run([sys.executable, "-c", REWRITER, str(path), "2000"], check=True, timeout=60)
    assert w.watcher.wait_for(lambda s: w.store.get("a") == 2000, WAIT), w.watcher.status
    assert all(s["b"] == 2 * s["a"] for s in w.published), "an invalid config was published"
    assert [s["a"] for s in w.published] == sorted(s["a"] for s in w.published)
    assert all(isinstance(e, ParseError | ValidationError | UnsettledError) for e in w.errors), w.errors
    stops_cleanly(w)


# -- break 7: a slow in-place writer ----------------------------------------------------------------------

SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    path, fmt, lines, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    line = {"toml": "k{0} = {0}\\n", "yaml": "k{0}: {0}\\n", "env": "k{0}={0}\\n"}[fmt]
    with open(path, "w") as file:  # in place: truncate, then write line by line
        for i in range(lines):
            file.write(line.format(i))
            file.flush()
            if i == 0:
                print("started", flush=True)
            time.sleep(pause)
    """
)
LINES = 50


def complete(fmt: str, value: Callable[[int], object] = lambda i: i) -> dict[str, Any]:
    return {f"k{i}": (str(value(i)) if fmt == "env" else value(i)) for i in range(LINES)}


def first_version(fmt: str) -> str:
    line = {"toml": "k{0} = -1\n", "yaml": "k{0}: -1\n", "env": "k{0}=-1\n"}[fmt]
    return "".join(line.format(i) for i in range(LINES))


@pytest.fixture(params=["toml", "yaml", "env"])
def fmt(request: pytest.FixtureRequest) -> str:
    if request.param == "yaml":
        pytest.importorskip("yaml")
    return str(request.param)


def slow_writer(path: Path, fmt: str) -> subprocess.Popen[str]:
    writer = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(path), fmt, str(LINES), "0.01"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "started"
    return writer


# quiet is the settle time: far longer than the writer's pauses (a writer that pauses for longer
# mid-file is the documented limit). max_delay is shorter than the write takes, so the watcher
# must report the file as unsettled rather than load what it has.
SETTLE = {"quiet": 0.5, "max_delay": 0.3}


def test_a_slow_in_place_writer_is_never_published_half_written(
    tmp_path: Path, backend: str, fmt: str, watched_cleanup: list[Watched]
) -> None:
    path = tmp_path / f"app.{fmt}" if fmt != "env" else tmp_path / ".env"
    path.write_text(first_version(fmt))
    w = watched(path, backend, **SETTLE)
    watched_cleanup.append(w)
    first = complete(fmt, lambda i: -1)
    writer = slow_writer(path, fmt)
    assert writer.wait(60) == 0
    # The subscriber gets the snapshot after readers can see it: wait for both.
    assert w.watcher.wait_for(
        lambda s: w.store == complete(fmt) and w.published[-1:] == [complete(fmt)], WAIT
    ), w.watcher.status
    assert all(s in (first, complete(fmt)) for s in w.published), "a half-written file was published"
    assert all(isinstance(e, UnsettledError) for e in w.errors), w.errors
    stops_cleanly(w)


def test_reload_and_the_initial_load_wait_for_a_slow_writer(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"app.{fmt}" if fmt != "env" else tmp_path / ".env"
    path.write_text(first_version(fmt))
    errors: list[Exception] = []
    watcher = ConfigWatcher(SnapshotMap(), path, on_error=errors.append, **SETTLE)
    writer = slow_writer(path, fmt)
    try:
        assert not watcher.reload()  # still changing: reported, not loaded
        assert isinstance(errors[-1], UnsettledError)
        assert watcher.store == complete(fmt, lambda i: -1)
    finally:
        writer.wait(60)
    writer = slow_writer(path, fmt)
    try:
        late = ConfigWatcher(SnapshotMap(), path, quiet=0.5, max_delay=30)  # waits for it to settle
        assert late.store == complete(fmt)
    finally:
        writer.wait(60)
    assert watcher.reload() and watcher.store == complete(fmt)


# -- break 10: validators, callbacks and stop() ----------------------------------------------------------


def test_stop_while_a_slow_validator_runs_publishes_nothing_afterwards(
    tmp_path: Path, backend: str, watched_cleanup: list[Watched]
) -> None:
    # break 10: stop() returned after its timeout while the validator ran, then the watcher published.
    entered, release = threading.Event(), threading.Event()

    def validate(config: dict[str, Any]) -> None:
        if config["v"] == 2:
            entered.set()
            release.wait(WAIT)

    path = tmp_path / "app.json"
    path.write_text('{"v": 1}')
    w = watched(path, backend, validate=validate)
    watched_cleanup.append(w)
    write_atomically(path, '{"v": 2}')
    assert entered.wait(WAIT)
    version = w.store.version
    assert within(WAIT, lambda: w.watcher.stop(timeout=0.2)) is False  # the validator still runs
    release.set()
    assert w.watcher._thread is not None
    w.watcher._thread.join(WAIT)
    assert not w.watcher._thread.is_alive()
    assert w.store.version == version and w.store == {"v": 1}  # nothing published after stop()
    assert w.published == []
    stops_cleanly(w)


def test_stop_during_a_slow_subscriber_says_so_and_publishes_nothing_afterwards(
    tmp_path: Path, backend: str, watched_cleanup: list[Watched]
) -> None:
    entered, release = threading.Event(), threading.Event()
    path = tmp_path / "app.json"
    path.write_text('{"v": 1}')
    w = watched(path, backend)
    watched_cleanup.append(w)

    def slow(change: Any) -> None:
        if change.new["v"] == 2:
            entered.set()
            release.wait(WAIT)

    w.store.subscribe(slow)
    write_atomically(path, '{"v": 2}')
    assert entered.wait(WAIT)  # v2 is published; its delivery is under way
    assert within(WAIT, lambda: w.watcher.stop(timeout=0.2)) is False
    write_atomically(path, '{"v": 3}')
    release.set()
    assert wait_stopped(w)
    assert w.store == {"v": 2} and [s["v"] for s in w.published] == [2]
    stops_cleanly(w)


@pytest.mark.parametrize("raised", [SystemExit, KeyboardInterrupt, GeneratorExit])
def test_a_validator_raising_a_base_exception_stops_the_watcher_cleanly(
    tmp_path: Path, backend: str, raised: type[BaseException], watched_cleanup: list[Watched]
) -> None:
    # break 10: SystemExit killed the poll thread silently (failures 0, no on_error).
    def validate(config: dict[str, Any]) -> None:
        if config["v"] == 2:
            raise raised(f"from the validator of {config}")

    path = tmp_path / "app.json"
    path.write_text('{"v": 1}')
    w = watched(path, backend, validate=validate)
    watched_cleanup.append(w)
    write_atomically(path, '{"v": 2}')
    assert wait_stopped(w)
    refused(w, {"v": 1}, WatcherStoppedError, alive=False)
    assert isinstance(w.watcher.status.last_error.__cause__, raised)
    write_atomically(path, '{"v": 3}')
    assert not w.watcher.reload() and w.store == {"v": 1}  # stopped: nothing more is published
    with pytest.raises(RuntimeError, match="stopped"):
        w.watcher.start()
    stops_cleanly(w)


def wait_stopped(w: Watched) -> bool:
    thread = w.watcher._thread
    assert thread is not None
    thread.join(WAIT)
    return not thread.is_alive()


def test_a_base_exception_on_the_callers_thread_is_reported_and_raised(tmp_path: Path) -> None:
    def validate(config: dict[str, Any]) -> None:
        if config["v"] == 2:
            raise KeyboardInterrupt

    path = tmp_path / "app.json"
    path.write_text('{"v": 1}')
    errors: list[Exception] = []
    watcher = ConfigWatcher(SnapshotMap(), path, validate=validate, on_error=errors.append, **FAST)
    write_atomically(path, '{"v": 2}')
    with pytest.raises(KeyboardInterrupt):
        watcher.reload()
    assert isinstance(errors[-1], WatcherStoppedError) and watcher.status.stopped
    assert watcher.store == {"v": 1}
    assert within(WAIT, watcher.stop) is True


VERDICTS: list[tuple[object, type[Exception] | None]] = [
    (None, None),
    (True, None),
    ([], None),
    ((), None),
    (False, ValidationError),
    (["port must be positive"], ValidationError),
    (("a", "b"), ValidationError),
    ("port must be positive", ValidatorError),
    (0, ValidatorError),
    ({"port": "bad"}, ValidatorError),
    (iter(()), ValidatorError),
]


@pytest.mark.parametrize(
    ("verdict", "error_type"), VERDICTS, ids=[type(v).__name__ + ":" + str(bool(v)) for v, _ in VERDICTS]
)
def test_the_validator_contract(tmp_path: Path, verdict: object, error_type: type[Exception] | None) -> None:
    # break 10: False was read as valid, True as a failure ("'bool' object is not iterable").
    path = tmp_path / "app.json"
    path.write_text('{"v": 1}')
    errors: list[Exception] = []
    watcher = ConfigWatcher(
        SnapshotMap(),
        path,
        validate=lambda c: None if c["v"] == 1 else verdict,
        on_error=errors.append,
        **FAST,
    )
    write_atomically(path, '{"v": 2}')
    published = watcher.reload()
    if error_type is None:
        assert published and watcher.store == {"v": 2} and errors == []
    else:
        assert not published and watcher.store == {"v": 1}
        assert type(errors[-1]) is error_type and watcher.status.last_error is errors[-1]
    if error_type is ValidatorError:
        assert isinstance(errors[-1], TypeError) and isinstance(errors[-1], ValidationError)


@pytest.mark.parametrize("where", ["on_reload", "on_error", "validate"])
def test_stop_from_the_watchers_own_thread(
    tmp_path: Path, backend: str, where: str, watched_cleanup: list[Watched]
) -> None:
    # break 10: stop() inside on_reload raised "cannot join current thread".
    path = tmp_path / "app.json"
    path.write_text('{"v": 1}')
    returned: list[object] = []
    holder: list[ConfigWatcher] = []

    def stop_here(*args: object) -> None:
        if not holder or threading.current_thread() is not holder[0]._thread:
            return
        try:
            returned.append(holder[0].stop())
        except Exception as error:
            returned.append(error)

    def validate(config: dict[str, Any]) -> None:
        if config["v"] == 2 and where == "validate":
            stop_here()

    options: dict[str, Any] = {"validate": validate}
    if where != "validate":
        options[where] = stop_here
    watcher = ConfigWatcher(SnapshotMap(), path, backend=backend, **{**FAST, **options})
    holder.append(watcher)
    w = Watched(watcher)
    watched_cleanup.append(w)
    watcher.start()
    write_atomically(path, '{"v": 2}' if where != "on_error" else '{"v": ')
    assert wait_stopped(w)
    assert returned == [True]
    assert watcher.store == ({"v": 1} if where != "on_reload" else {"v": 2})
    stops_cleanly(w)


def test_concurrent_reloads_never_publish_an_older_file_over_a_newer_one(tmp_path: Path) -> None:
    # break 10: reload() A read v2 and validated slowly; reload() B read v3 and published it;
    # then A published v2 over it.
    path = tmp_path / "app.json"
    path.write_text('{"v": 1}')
    in_validator, gate = threading.Event(), threading.Event()

    def validate(config: dict[str, Any]) -> None:
        if config["v"] == 2 and threading.current_thread().name == "A":
            in_validator.set()
            gate.wait(WAIT)

    store: SnapshotMap[str, Any] = SnapshotMap()
    watcher = ConfigWatcher(store, path, validate=validate, quiet=0.02)
    seen: list[int] = []
    store.subscribe(lambda change: seen.append(change.new["v"]))
    write_atomically(path, '{"v": 2}')
    a = InThread(watcher.reload, name="A")
    assert in_validator.wait(WAIT)
    write_atomically(path, '{"v": 3}')
    b = InThread(watcher.reload, name="B")
    b.thread.join(1.0)  # B is waiting for A (serialised), or, before the fix, has published v3
    gate.set()
    a.join(WAIT)
    b.join(WAIT)
    assert store == {"v": 3}, seen
    assert seen == sorted(seen), seen


# -- permission denied, as a user that root cannot be ----------------------------------------------------

PERMISSION_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from ftmap import ConfigWatcher, SnapshotMap
    directory, backend = sys.argv[1], sys.argv[2]
    path = os.path.join(directory, "app.json")
    with open(path, "w") as f:
        f.write('{"v": 1}')
    errors = []
    watcher = ConfigWatcher(SnapshotMap(), path, on_error=errors.append, backend=backend,
                            interval=0.01, quiet=0.05, max_delay=1.0).start()
    os.chmod(path, 0)
    # on_error runs after the status records the failure: wait for both.
    assert watcher.wait_for(
        lambda s: isinstance(s.current_error, PermissionError) and errors, 10
    ), watcher.status
    assert isinstance(errors[-1], PermissionError) and watcher.status.last_error is errors[-1]
    assert watcher.store == {"v": 1} and watcher.status.running
    os.chmod(path, 0o644)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write('{"v": 2}')
    os.replace(tmp, path)
    assert watcher.wait_for(lambda s: watcher.store == {"v": 2}, 10), watcher.status
    assert watcher.stop() is True and not watcher.status.running
    print("ok")
    """
)


def test_permission_denied(backend: str) -> None:
    source = Path(ftmap.__file__).resolve().parents[1]
    interpreter = Path(sys.executable)
    as_nobody: dict[str, Any] = {}
    directory = Path(tempfile.mkdtemp(prefix="ftmap-permission-"))
    try:
        if os.geteuid() == 0:
            choices = [Path(sys.executable), Path("/usr/bin/python3")]
            usable = [p for p in choices if p.exists() and reachable_by_everyone(p)]
            if not usable or not reachable_by_everyone(source / "ftmap" / "__init__.py"):
                pytest.skip("running as root, and no interpreter or source tree is reachable by 'nobody'")
            interpreter = usable[0]
            os.chown(directory, 65534, 65534)
            as_nobody = {"user": 65534, "group": 65534, "extra_groups": []}
        env = {"PYTHONPATH": str(source), "PATH": os.environ.get("PATH", "")}
        if backend == "watchfiles":
            # The child may be another build of this Python (as root, a system one that
            # "nobody" can run): this environment's packages work for it if the version matches.
            packages = Path(sysconfig.get_paths()["purelib"])
            if as_nobody and reachable_by_everyone(packages / "watchfiles" / "__init__.py"):
                env["PYTHONPATH"] += os.pathsep + str(packages)
            probe = subprocess.run(
                [str(interpreter), "-c", "import watchfiles"],
                check=False,
                env=env,
                capture_output=True,
                timeout=60,
                **as_nobody,
            )
            if probe.returncode != 0:
                pytest.skip(f"{interpreter} run as 'nobody' cannot import watchfiles")
        run = subprocess.run(
            [str(interpreter), "-c", PERMISSION_SCRIPT, str(directory), backend],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
            **as_nobody,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
