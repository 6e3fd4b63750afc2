"""Implementation selection (ftmap._impl): the decision, its reasons, the export pattern, pickles."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import ftmap
from ftmap import _impl

ROOT = Path(__file__).resolve().parents[2]


def fake_core(**attrs: Any) -> types.ModuleType:
    module = types.ModuleType("ftmap._core")
    module.build_info = {"free_threaded": True, "test_hooks": False, "sanitizer": ""}  # type: ignore[attr-defined]
    for name, value in attrs.items():
        setattr(module, name, value)
    return module


def never_imported() -> types.ModuleType:
    raise AssertionError("the C core must not be imported here")


@pytest.mark.parametrize("value", ["1", "yes"])
def test_ftmap_pure_python_forces_python_and_says_so(value: str) -> None:
    assert _impl.decide({"FTMAP_PURE_PYTHON": value}, (3, 13, 5), "CPython", never_imported) == (
        "python",
        f"FTMAP_PURE_PYTHON={value}",
        None,
    )


@pytest.mark.parametrize("value", ["", "0"])
def test_ftmap_pure_python_empty_or_zero_does_not_force(value: str) -> None:
    module = fake_core()
    implementation, reason, chosen = _impl.decide(
        {"FTMAP_PURE_PYTHON": value}, (3, 13, 5), "CPython", lambda: module
    )
    assert implementation == "c" and chosen is module
    assert reason == "ftmap._core imported (CPython 3.13.5, free-threaded build)"


def test_older_interpreters_and_other_implementations_get_python_with_the_reason() -> None:
    assert _impl.decide({}, (3, 11, 7), "CPython", never_imported)[:2] == (
        "python",
        "CPython 3.11.7 is older than 3.13",
    )
    assert _impl.decide({}, (3, 10, 14), "PyPy", never_imported)[:2] == (
        "python",
        "PyPy 3.10.14 is not CPython",
    )


def test_a_core_that_is_not_built_reports_the_recorded_build_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def missing() -> types.ModuleType:
        raise ModuleNotFoundError("No module named 'ftmap._core'", name="ftmap._core")

    monkeypatch.setattr(_impl, "_BUILD_FAILURE", tmp_path / "_core_build_failure.txt")
    assert _impl.decide({}, (3, 13, 5), "CPython", missing)[1] == (
        "ftmap._core is not built (installed without it, or not compiled yet)"
    )
    (tmp_path / "_core_build_failure.txt").write_text("the C core failed to build at install time (boom)\n")
    assert _impl.decide({}, (3, 13, 5), "CPython", missing)[1] == (
        "ftmap._core is not built: the C core failed to build at install time (boom)"
    )


def test_a_core_that_fails_to_import_reports_the_error() -> None:
    def broken() -> types.ModuleType:
        raise ImportError("undefined symbol: PyUnstable_Whatever")

    assert _impl.decide({}, (3, 13, 5), "CPython", broken)[:2] == (
        "python",
        "ftmap._core failed to import: ImportError: undefined symbol: PyUnstable_Whatever",
    )


def test_this_process_selected_what_its_interpreter_and_environment_say() -> None:
    assert ftmap.implementation == _impl.implementation in ("c", "python")
    assert ftmap.implementation_reason == _impl.implementation_reason
    if os.environ.get("FTMAP_PURE_PYTHON", "") not in ("", "0"):
        assert ftmap.implementation == "python"
    elif sys.version_info < (3, 13):
        assert ftmap.implementation == "python"
        assert ftmap.implementation_reason.endswith("is older than 3.13")
    expected = os.environ.get("FTMAP_EXPECT_IMPLEMENTATION")
    if expected:
        assert ftmap.implementation == expected, ftmap.implementation_reason


@pytest.mark.parametrize("env", [{"FTMAP_PURE_PYTHON": "1"}, {"FTMAP_PURE_PYTHON": "0"}])
def test_the_choice_is_made_at_import_from_the_environment(env: dict[str, str]) -> None:
    code = "import ftmap; print(ftmap.implementation); print(ftmap.implementation_reason)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    if env["FTMAP_PURE_PYTHON"] == "1":
        assert out == ["python", "FTMAP_PURE_PYTHON=1"]
    else:
        can_have_c = sys.version_info >= (3, 13) and _impl._any_core() is not None
        assert out[0] == ("c" if can_have_c else "python"), out


def test_every_exported_name_follows_the_selection() -> None:
    for name in _impl.PURE:
        chosen = _impl.select(name)
        both = _impl.variants(name)
        assert both["python"] is getattr(sys.modules[_impl.PURE[name]], name)
        assert chosen is both[_impl.implementation_of(name)]
        if name in ftmap.__all__:
            assert getattr(ftmap, name) is chosen, name
        if _impl.implementation == "python":
            assert chosen is both["python"]
        elif "c" in both:
            assert chosen is both["c"]


def test_fnv_is_in_c_whenever_the_core_is() -> None:
    if _impl.implementation == "c":
        assert ftmap.fnv1a_32 is _impl.core.fnv1a_32  # type: ignore[union-attr]
        in_c = _impl.describe().split("in C: ", 1)[1].split(";")[0].split(", ")  # maps may come first
        assert {"fnv1_32", "fnv1a_32", "fnv1a_64", "shard_of"} <= set(in_c), _impl.describe()
    else:
        assert ftmap.fnv1a_32.__module__ == "ftmap._fnv"


def test_select_of_an_unregistered_name_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="'Nope' has no implementations registered"):
        _impl.select("Nope")


# -- pickles: portable between implementations -------------------------------------------------


class PureThing:
    def __init__(self, content: dict[str, int], *, label: str = "") -> None:
        self.content, self.label = content, label

    def __reduce__(self) -> tuple[Any, ...]:
        kwargs = {"label": self.label} if self.label else None
        return _impl.reduce(self, "Thing", (self.content,), kwargs)


class CThing(PureThing):  # stands for the C class: same constructor, same __reduce__
    pass


class UserThing(PureThing):  # a user's subclass of the pure class
    pass


@pytest.fixture
def thing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_impl.PURE, "Thing", __name__)
    monkeypatch.setattr(sys.modules[__name__], "Thing", PureThing, raising=False)


def select_core(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType | None) -> None:
    monkeypatch.setattr(_impl, "core", module)
    monkeypatch.setattr(_impl, "_core_for_variants", [module])


@pytest.mark.thread_unsafe(reason="patches ftmap._impl's module state")
@pytest.mark.parametrize("pickled_as", ["c", "python"])
@pytest.mark.parametrize("loaded_as", ["c", "python"])
def test_pickles_load_as_the_implementation_selected_when_loading(
    thing: None, monkeypatch: pytest.MonkeyPatch, pickled_as: str, loaded_as: str
) -> None:
    select_core(monkeypatch, fake_core(Thing=CThing))
    original = (CThing if pickled_as == "c" else PureThing)({"a": 1}, label="x")
    data = pickle.dumps(original)
    select_core(monkeypatch, fake_core(Thing=CThing) if loaded_as == "c" else None)
    loaded = pickle.loads(data)
    assert type(loaded) is (CThing if loaded_as == "c" else PureThing)
    assert loaded.content == {"a": 1} and loaded.label == "x"


@pytest.mark.thread_unsafe(reason="patches ftmap._impl's module state")
def test_a_subclass_pickles_as_itself(thing: None, monkeypatch: pytest.MonkeyPatch) -> None:
    select_core(monkeypatch, fake_core(Thing=CThing))
    for original in (UserThing({"a": 1}), UserThing({"a": 1}, label="y")):
        loaded = pickle.loads(pickle.dumps(original))
        assert type(loaded) is UserThing and loaded.content == {"a": 1} and loaded.label == original.label


@pytest.mark.parametrize("name", ["UnsafeMap", "SyncMap", "ShardedMap", "SnapshotMap"])
def test_map_pickles_are_portable_between_implementations(name: str) -> None:
    # Activates as each map gets its C class: a C map pickled loads as the pure one and back.
    both = _impl.variants(name)
    if "c" not in both:
        pytest.skip(f"{name} has no C implementation yet")
    for source in both.values():
        original = source({"a": 1})
        for target_name in both:
            data = pickle.dumps(original)
            assert pickle.loads(data) == original, (name, target_name)
            assert b"ftmap._impl" in data and b"rebuild" in data


class PureMap(dict[str, int]):  # stands for a pure map: a MutableMapping
    pass


class CMapType:  # stands for a C type: no ABC in its bases
    def __init__(self, *args: Any) -> None:
        self.args = args


@pytest.mark.thread_unsafe(reason="patches ftmap._impl's module state")
def test_a_c_class_is_registered_with_the_abcs_of_the_pure_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from collections.abc import MutableMapping  # noqa: PLC0415

    monkeypatch.setitem(_impl.PURE, "PureMap", __name__)
    monkeypatch.setattr(sys.modules[__name__], "PureMap", PureMap)
    select_core(monkeypatch, fake_core(PureMap=CMapType))
    assert _impl.select("PureMap") is CMapType and _impl.implementation_of("PureMap") == "c"
    assert issubclass(CMapType, MutableMapping)


@pytest.mark.thread_unsafe(reason="patches ftmap._impl's module state")
def test_a_c_variant_may_be_a_python_subclass_in_its_own_module(monkeypatch: pytest.MonkeyPatch) -> None:
    shim = types.ModuleType("ftmap_test_shim")
    shim.Thing = CThing  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ftmap_test_shim", shim)
    monkeypatch.setitem(_impl.PURE, "Thing", __name__)
    monkeypatch.setitem(_impl.C_MODULES, "Thing", "ftmap_test_shim")
    monkeypatch.setattr(sys.modules[__name__], "Thing", PureThing, raising=False)
    select_core(monkeypatch, fake_core())  # the core module itself has no Thing
    assert _impl.variants("Thing") == {"python": PureThing, "c": CThing}
    assert _impl.select("Thing") is CThing
    select_core(monkeypatch, None)
    assert _impl.select("Thing") is PureThing and _impl.variants("Thing") == {"python": PureThing}


@pytest.mark.thread_unsafe(reason="starts a whole pytest session")
@pytest.mark.parametrize("expected", ["c", "python"])
def test_a_session_expecting_the_other_implementation_fails_at_start_up(expected: str) -> None:
    # Forced to pure Python, a session that expects C must stop before running anything; one
    # that expects Python runs. This is what keeps a broken C build from passing CI silently.
    env = {**os.environ, "FTMAP_PURE_PYTHON": "1", "FTMAP_EXPECT_IMPLEMENTATION": expected}
    env.pop("FTMAP_EXPECT_TEST_HOOKS", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "tests/unit/test_core_impl.py",
            "-k",
            "vectors_nothing",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if expected == "c":
        assert done.returncode == 3, done.stdout + done.stderr
        assert "FTMAP_EXPECT_IMPLEMENTATION=c but ftmap.implementation is 'python': FTMAP_PURE_PYTHON=1" in (
            done.stdout + done.stderr
        )
    else:
        assert done.returncode == 5, done.stdout + done.stderr  # ran, and selected no test
