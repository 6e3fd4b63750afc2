"""Hot reload under load: readers never see a torn config while the file is rewritten, badly and well."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

from ftmap import ConfigWatcher, ParseError, SnapshotMap, ValidationError
from ftmap.testing import run_threads


def test_readers_never_see_a_torn_or_invalid_config_during_reloads(tmp_path: Path, ftmap_seed: int) -> None:
    path = tmp_path / "app.json"
    path.write_text(json.dumps({"a": 0, "b": 0}))
    errors: list[Exception] = []

    def validate(config: dict[str, int]) -> list[str]:
        return [] if config.get("b") == 2 * config.get("a", -1) else ["b must be 2 * a"]

    watcher = ConfigWatcher(
        SnapshotMap(), path, validate=validate, on_error=errors.append, interval=0.002, quiet=0.004
    )
    done = threading.Event()

    def rewrite(rng: random.Random) -> None:
        try:
            for i in range(1, 301):
                kind = 1.0 if i == 300 else rng.random()  # the last version is valid
                if kind < 0.15:
                    text = '{"a": 1, "b":'  # invalid syntax
                elif kind < 0.3:
                    text = json.dumps({"a": i, "b": i})  # valid syntax, rejected by validation
                else:
                    text = json.dumps({"a": i, "b": 2 * i})
                temporary = path.with_name(f"app.{i}.tmp")
                temporary.write_text(text)
                os.replace(temporary, path)
                if i % 10 == 0:
                    time.sleep(0.01)  # edits come in bursts: the scenario, not synchronisation
        finally:
            done.set()

    def read() -> int:
        checks, last = 0, 0
        while not done.is_set() or checks < 1_000:
            snap = watcher.store.snapshot()
            assert snap["b"] == 2 * snap["a"], f"torn or invalid config published: {dict(snap)}"
            assert snap.version >= last
            last = snap.version
            checks += 1
        return checks

    with watcher:
        run_threads(lambda t, rng: rewrite(rng) if t == 0 else read(), threads=3, seed=ftmap_seed)
        assert watcher.wait_for(lambda s: watcher.store.get("a") == 300, timeout=10), watcher.status
    assert watcher.status.reloads >= 2
    assert all(isinstance(e, ParseError | ValidationError) for e in errors)


def test_racing_reloads_never_publish_an_older_file_over_a_newer_one(tmp_path: Path, ftmap_seed: int) -> None:
    # Issue 13, break 10: reload() calls racing each other published an older read over a newer one.
    # Here every publish is checked: the counter the store holds must never go down.
    path = tmp_path / "app.json"
    path.write_text(json.dumps({"n": 0}))
    slow = threading.local()

    def validate(config: dict[str, int]) -> None:
        rng = getattr(slow, "rng", None)
        if rng is None:
            rng = slow.rng = random.Random(ftmap_seed + threading.get_ident())
        if rng.random() < 0.2:
            time.sleep(rng.random() * 0.003)  # a slow validator widens the race: the scenario

    store: SnapshotMap[str, int] = SnapshotMap()
    watcher = ConfigWatcher(store, path, validate=validate, quiet=0.0005, max_delay=5.0)
    seen: list[int] = []
    store.subscribe(lambda change: seen.append(change.new["n"]))
    done = threading.Event()
    final = 400

    def work(thread: int, rng: random.Random) -> int:
        if thread == 0:
            try:
                for n in range(1, final + 1):
                    temporary = path.with_name(f"app.{n}.tmp")
                    temporary.write_text(json.dumps({"n": n}))
                    os.replace(temporary, path)
            finally:
                done.set()
            return 0
        reloads = 0
        while not done.is_set():
            watcher.reload()
            reloads += 1
        return reloads

    run_threads(work, threads=4, seed=ftmap_seed)
    watcher.reload()
    assert store["n"] == final
    assert seen == sorted(seen), "an older file was published over a newer one"
    assert len(seen) == len(set(seen))
