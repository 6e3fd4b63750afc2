"""ConfigWatcher: every way a config file changes, and every way loading it fails.

Each case keeps the last good config on failure, records it on status and
reports it to on_error, then publishes once the file is fixed. Waiting is on
the watcher's own condition (wait_for), never a sleep; the pauses in the
chunked-write test are part of the scenario, not synchronisation.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import ftmap
from ftmap import (
    ConfigWatcher,
    EmptyConfigError,
    ParseError,
    SnapshotMap,
    ValidationError,
    parse_config,
)
from ftmap._config import ConfigLimitError, ConfigLimits
from ftmap._config_parse import check_structure
from tests.threads import within

pytestmark = pytest.mark.thread_unsafe(reason="files, watcher threads and timing")

FAST = {"interval": 0.01, "quiet": 0.05, "max_delay": 1.0}


@pytest.fixture(params=["poll", "watchfiles"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each reload case runs with both ways of watching."""
    if request.param == "watchfiles":
        pytest.importorskip("watchfiles")
    return str(request.param)


def write_atomically(path: Path, text: str) -> None:
    """An editor's save: write a temporary file beside it, then rename it over."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def watch(path: Path, **options: Any) -> tuple[ConfigWatcher, list[Exception]]:
    errors: list[Exception] = []
    watcher = ConfigWatcher(SnapshotMap(), path, on_error=errors.append, **{**FAST, **options})
    return watcher.start(), errors


def settled(
    watcher: ConfigWatcher, reloads: int = -1, failures: int = -1, errors: list[Exception] | None = None
) -> None:
    """Wait for the counts on status; with ``errors`` (the on_error list), for that many reports
    there too: on_error runs after the status records a failure, so the status alone is early."""

    def done(status: Any) -> bool:
        return (
            (reloads < 0 or status.reloads >= reloads)
            and (failures < 0 or status.failures >= failures)
            and (errors is None or len(errors) >= failures)
        )

    assert watcher.wait_for(done, timeout=10), (watcher.status, errors)


# -- formats -------------------------------------------------------------------------------


def test_formats(tmp_path: Path) -> None:
    assert parse_config(b'{"a": {"b": [1, 2]}}', "json") == {"a": {"b": [1, 2]}}
    assert parse_config(b'a = 1\n[db]\nhost = "x"\n', "toml") == {"a": 1, "db": {"host": "x"}}
    env = b'# comment\nexport A=1\nB="two words"\nC=three # trailing\nD=\n'
    assert parse_config(env, "env") == {"A": "1", "B": "two words", "C": "three", "D": ""}
    with pytest.raises(ParseError, match="line 1"):
        parse_config(b"not a pair\n", "env")
    with pytest.raises(ParseError, match="must be a mapping"):
        parse_config(b"[1, 2]", "json")
    with pytest.raises(ValueError, match="format must be one of"):
        parse_config(b"", "ini")
    (tmp_path / "app.toml").write_text("a = 1\n")
    assert SnapshotMap.from_file(tmp_path / "app.toml") == {"a": 1}
    (tmp_path / ".env").write_text("A=1\n")
    assert SnapshotMap.from_file(tmp_path / ".env") == {"A": "1"}
    with pytest.raises(ValueError, match="cannot tell the format"):
        SnapshotMap.from_file(tmp_path / "app.ini")


def test_yaml_without_pyyaml_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ParseError, match="pip install pyyaml"):
        parse_config(b"a: 1\n", "yaml")


def test_the_initial_load_raises_when_the_file_cannot_be_loaded(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ConfigWatcher(SnapshotMap(), tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ParseError):
        ConfigWatcher(SnapshotMap(), tmp_path / "bad.json")


# -- the reload cases ----------------------------------------------------------------------------


def test_atomic_rename_save(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "app.json"
    path.write_text('{"v": 1}')
    watcher, errors = watch(path, backend=backend)
    with watcher:
        write_atomically(path, '{"v": 2}')
        settled(watcher, reloads=2)
    assert watcher.store == {"v": 2} and errors == []


def test_in_place_truncate_and_write_in_chunks_with_pauses(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "app.json"
    path.write_text(json.dumps({"v": 1, "pad": "x" * 10}))
    watcher, errors = watch(path, backend=backend, quiet=0.02)  # quiet shorter than the writer's pauses
    final = json.dumps({"v": 2, "pad": "y" * 300})
    with watcher:
        with open(path, "w") as file:  # truncates: the reader may see any prefix
            for start in range(0, len(final), 60):
                file.write(final[start : start + 60])
                file.flush()
                time.sleep(0.05)  # the writer is slow: this is the scenario, not synchronisation
        settled(watcher, reloads=2)
        assert watcher.store["v"] == 2
    # Every half-written version the watcher saw was refused, never published.
    assert all(isinstance(e, ParseError) for e in errors)
    assert watcher.status.failures == len(errors)
    assert watcher.store.history_versions()[-1] == watcher.status.version


def test_kubernetes_style_symlink_swap(tmp_path: Path, backend: str) -> None:
    # ConfigMap layout: app.json -> ..data/app.json, ..data -> ..2024_01 (swapped atomically)
    for version in ("..v1", "..v2"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "app.json").write_text(json.dumps({"v": version}))
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "app.json").symlink_to("..data/app.json")
    watcher, errors = watch(tmp_path / "app.json", backend=backend)
    assert watcher.store == {"v": "..v1"}
    with watcher:
        (tmp_path / "..data_tmp").symlink_to("..v2")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")  # the swap
        settled(watcher, reloads=2)
    assert watcher.store == {"v": "..v2"} and errors == []


def test_delete_then_recreate(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "app.toml"
    path.write_text("v = 1\n")
    watcher, errors = watch(path, backend=backend)
    with watcher:
        path.unlink()
        settled(watcher, failures=1)
        assert watcher.store == {"v": 1}  # the last good config stays
        assert isinstance(watcher.status.last_error, FileNotFoundError)
        path.write_text("v = 2\n")
        settled(watcher, reloads=2)
    assert watcher.store == {"v": 2} and len(errors) == 1


def test_invalid_toml_keeps_the_last_good_config(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "app.toml"
    path.write_text('name = "ok"\n')
    watcher, errors = watch(path, backend=backend)
    with watcher:
        write_atomically(path, "name = \n")
        settled(watcher, failures=1, errors=errors)
        assert watcher.store == {"name": "ok"}
        assert isinstance(errors[0], ParseError) and "invalid toml" in str(errors[0])
        assert watcher.status.last_error is errors[0] and watcher.status.last_error_time is not None
        write_atomically(path, 'name = "fixed"\n')
        settled(watcher, reloads=2)
    assert watcher.store == {"name": "fixed"} and watcher.status.reloads == 2


def test_validator_rejection(tmp_path: Path, backend: str) -> None:
    def validate(config: Any) -> list[str]:
        return [] if config.get("port", 0) > 0 else ["port must be positive"]

    path = tmp_path / "app.json"
    path.write_text('{"port": 80}')
    watcher, errors = watch(path, backend=backend, validate=validate)
    with watcher:
        write_atomically(path, '{"port": -1}')
        settled(watcher, failures=1, errors=errors)
        assert watcher.store == {"port": 80}
        assert isinstance(errors[0], ValidationError) and errors[0].errors == ["port must be positive"]
        write_atomically(path, '{"port": 8080}')
        settled(watcher, reloads=2)
    assert watcher.store == {"port": 8080}


def test_a_validator_that_raises_is_a_rejection(tmp_path: Path) -> None:
    def validate(config: Any) -> None:
        if "port" not in config:
            raise KeyError("port")

    path = tmp_path / "app.json"
    path.write_text('{"port": 1}')
    watcher, errors = watch(path, validate=validate)
    assert not watcher.reload()  # unchanged content: nothing to do
    write_atomically(path, "{}")
    assert not watcher.reload()
    assert isinstance(errors[0], ValidationError) and "KeyError" in str(errors[0])
    assert watcher.store == {"port": 1}


def test_an_empty_parse_never_replaces_a_config_unless_allowed(tmp_path: Path) -> None:
    path = tmp_path / "app.json"
    path.write_text('{"a": 1}')
    watcher, errors = watch(path)
    write_atomically(path, "{}")
    assert not watcher.reload()
    assert isinstance(errors[0], EmptyConfigError) and watcher.store == {"a": 1}
    allowing = ConfigWatcher(SnapshotMap(a=1), path, allow_empty=True)
    assert allowing.store == {}


def test_unchanged_content_is_not_a_reload_whatever_the_mtime(tmp_path: Path) -> None:
    path = tmp_path / "app.json"
    path.write_text('{"a": 1}')
    watcher, _ = watch(path)
    os.utime(path, (time.time() + 100, time.time() + 100))
    write_atomically(path, '{"a": 1}')
    assert not watcher.reload() and watcher.status.reloads == 1 and watcher.store.version == 2


PERMISSION_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from ftmap import ConfigWatcher, SnapshotMap
    directory = sys.argv[1]
    path = os.path.join(directory, "app.json")
    with open(path, "w") as f:
        f.write('{"v": 1}')
    errors = []
    watcher = ConfigWatcher(SnapshotMap(), path, on_error=errors.append)
    os.chmod(path, 0)
    assert not watcher.reload()
    assert isinstance(errors[0], PermissionError), errors
    assert isinstance(watcher.status.last_error, PermissionError)
    assert watcher.store == {"v": 1}
    os.chmod(path, 0o644)
    with open(path, "w") as f:
        f.write('{"v": 2}')
    assert watcher.reload() and watcher.store == {"v": 2}
    print("ok")
    """
)


def reachable_by_everyone(path: Path) -> bool:
    """Whether a user with no special rights can reach path: every directory above it o+x."""
    real = path.resolve()
    return all(parent.stat().st_mode & 0o001 for parent in real.parents) and bool(real.stat().st_mode & 0o005)


def test_permission_denied() -> None:
    # Root reads any file, so as root the check runs in a child process as "nobody",
    # under an interpreter and a source tree that nobody can reach.
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
        run = subprocess.run(
            [str(interpreter), "-c", PERMISSION_SCRIPT, str(directory)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"PYTHONPATH": str(source), "PATH": os.environ.get("PATH", "")},
            **as_nobody,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_status_copy_stop_and_a_watcher_that_survives_errors(tmp_path: Path) -> None:
    path = tmp_path / "app.json"
    path.write_text('{"a": 1}')
    reloads: list[int] = []

    def broken_callback(version: int) -> None:
        reloads.append(version)
        raise RuntimeError("callback bug")

    watcher = ConfigWatcher(SnapshotMap(), path, on_reload=broken_callback, **FAST)
    status = watcher.status
    with watcher:
        write_atomically(path, '{"a": 2}')
        settled(watcher, reloads=2)
        assert watcher._thread is not None and watcher._thread.is_alive()  # survived the callback
    assert watcher._thread is not None and not watcher._thread.is_alive()  # stopped by the context
    assert status.reloads == 1 and watcher.status.reloads == 2  # status is a copy
    assert reloads == [2, 3]


def test_an_unknown_backend_is_refused(tmp_path: Path) -> None:
    (tmp_path / "app.json").write_text("{}")
    with pytest.raises(ValueError, match="backend must be"):
        ConfigWatcher(SnapshotMap(), tmp_path / "app.json", backend="inotify")


# -- limits, status and the watcher's own contract -----------------------------------------------


def test_config_limits_are_checked() -> None:
    for bad in (0, -1, True, 1.5, "10"):
        with pytest.raises(ValueError, match="max_depth must be an int >= 1"):
            ConfigLimits(max_depth=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="limits must be a ConfigLimits"):
        ConfigWatcher(SnapshotMap(), "app.json", limits={"max_depth": 3})  # type: ignore[arg-type]


def test_parse_config_refuses_what_exceeds_the_limits() -> None:
    small = ConfigLimits(max_bytes=20, max_depth=3, max_nodes=10, max_aliases=2)
    with pytest.raises(ConfigLimitError) as raised:
        parse_config(b'{"a": "' + b"x" * 20 + b'"}', "json", limits=small)
    assert raised.value.limit == "max_bytes" and raised.value.maximum == 20
    assert parse_config(b'{"a": [[1]]}', "json", limits=small) == {"a": [[1]]}
    with pytest.raises(ConfigLimitError, match="max_depth=3"):
        parse_config(b'{"a": [[[1]]]}', "json", limits=small)
    with pytest.raises(ConfigLimitError, match="max_nodes=10"):
        parse_config(b'{"a": [' + b"0," * 9 + b"0]}", "json", limits=ConfigLimits(max_nodes=10))
    with pytest.raises(ConfigLimitError, match="max_depth"):
        parse_config(b"a = " + b"[" * 5000 + b"]" * 5000, "toml")  # tomllib recurses per level
    error = pickle.loads(pickle.dumps(raised.value))
    assert (type(error), error.limit, error.maximum, str(error)) == (
        ConfigLimitError,
        "max_bytes",
        20,
        str(raised.value),
    )


def test_check_structure_is_bounded_on_shared_and_cyclic_values() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ConfigLimitError, match="max_depth"):
        check_structure({"a": cyclic}, ConfigLimits())
    shared: Any = ["x"] * 10
    for _ in range(30):  # 10**30 nodes if expanded: counting stops at the limit
        shared = [shared] * 10
    with pytest.raises(ConfigLimitError, match="max_nodes"):
        check_structure({"a": shared}, ConfigLimits(max_depth=100))


def test_yaml_anchors_and_merges_within_the_limits_load() -> None:
    pytest.importorskip("yaml")
    text = b"defaults: &d {retries: 3, timeout: 5}\nprod: {<<: *d, timeout: 9}\nlist: [*d, *d]\n"
    assert parse_config(text, "yaml") == {
        "defaults": {"retries": 3, "timeout": 5},
        "prod": {"retries": 3, "timeout": 9},
        "list": [{"retries": 3, "timeout": 5}] * 2,
    }
    with pytest.raises(ConfigLimitError, match="max_aliases=2"):
        parse_config(text, "yaml", limits=ConfigLimits(max_aliases=2))
    with pytest.raises(ParseError, match="recursive YAML alias"):
        parse_config(b"a: &a {b: *a}\n", "yaml")


def test_status_revision_and_the_version_it_was_published_as(tmp_path: Path) -> None:
    path = tmp_path / "app.json"
    path.write_text('{"a": 1}')
    watcher, _ = watch(path)
    with watcher:
        write_atomically(path, '{"a": 2}')
        settled(watcher, reloads=2)
    status = watcher.status
    assert status.revision == hashlib.sha256(b'{"a": 2}').hexdigest()
    assert watcher.revision_of(status.version) == status.revision
    assert watcher.revision_of(status.version - 1) == hashlib.sha256(b'{"a": 1}').hexdigest()
    assert watcher.revision_of(999) is None
    assert status.current_error is None and status.stopped and not status.running


def test_start_stop_contract(tmp_path: Path) -> None:
    path = tmp_path / "app.json"
    path.write_text('{"a": 1}')
    never_started = ConfigWatcher(SnapshotMap(), path, **FAST)
    assert never_started.stop() is True and never_started.stop() is True
    watcher = ConfigWatcher(SnapshotMap(), path, **FAST)
    assert watcher.start() is watcher.start() and watcher.status.running  # idempotent
    assert watcher.stop() is True and not watcher.status.running
    with pytest.raises(RuntimeError, match="make a new one"):
        watcher.start()
    write_atomically(path, '{"a": 2}')
    assert not watcher.reload() and watcher.store == {"a": 1}


def test_a_subscriber_that_reloads_is_refused_not_deadlocked(tmp_path: Path) -> None:
    path = tmp_path / "app.json"
    path.write_text('{"a": 1}')
    store: SnapshotMap[str, Any] = SnapshotMap()
    watcher = ConfigWatcher(store, path, **FAST)
    refused: list[BaseException] = []

    def reload_inside(change: Any) -> None:
        try:
            watcher.reload()
        except RuntimeError as error:
            refused.append(error)

    store.subscribe(reload_inside)
    write_atomically(path, '{"a": 2}')
    assert within(10, watcher.reload) is True
    assert store == {"a": 2} and "would deadlock" in str(refused[0])


def test_file_options_are_checked(tmp_path: Path) -> None:
    (tmp_path / "app.json").write_text("{}")
    for option in ("interval", "quiet", "max_delay"):
        with pytest.raises(ValueError, match=f"{option} must be a number of seconds"):
            ConfigWatcher(SnapshotMap(), tmp_path / "app.json", **{option: -1})


def test_a_rollback_stays_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "app.json"
    path.write_text('{"a": 1}')
    store: SnapshotMap[str, Any] = SnapshotMap()
    watcher = ConfigWatcher(store, path, **FAST)
    first = store.version
    write_atomically(path, '{"a": 2}')
    assert watcher.reload() and store == {"a": 2}
    rolled_back = store.rollback(first)
    assert not watcher.reload() and store == {"a": 1}  # the file has not changed: kept
    assert watcher.revision_of(rolled_back) is None
    write_atomically(path, '{"a": 3}')
    assert watcher.reload() and store == {"a": 3}
