"""No asynchronous exception can skip SyncMap's cleanup handlers: an audit of the compiled bytecode.

On CPython 3.13 the exception table can leave gaps inside a ``try`` block: a loop
back-edge (JUMP_BACKWARD) that follows an ``if`` at the end of the loop body is covered
by no entry (python/cpython#130279). An asynchronous exception (or a KeyboardInterrupt)
delivered there skips the block's ``except`` and ``finally`` clauses, and ``with``'s
``__exit__``: a rollback never runs, a lock is never released. The injection stress
test found this in SyncMap's dirty-map build; this test finds it deterministically.

For every ``try`` with a ``finally`` or a handler for BaseException (and every ``with``)
in the module's functions, each point where an asynchronous exception can be delivered
inside its body (a CALL-family instruction returning, a JUMP_BACKWARD) must be covered
by the exception table.
"""

from __future__ import annotations

import ast
import dis
import importlib
import inspect
import sys
import types
from collections.abc import Iterator

import pytest

import ftmap._sync
from ftmap import _impl

# Where CPython checks for pending asynchronous exceptions (Python/bytecodes.c,
# _CHECK_PERIODIC and JUMP_BACKWARD); RESUME is at function entry, never inside a block.
DELIVERY = ("CALL", "CALL_KW", "CALL_FUNCTION_EX", "JUMP_BACKWARD")


def _is_cleanup(node: ast.AST) -> bool:
    if isinstance(node, ast.With):
        return True
    if not isinstance(node, ast.Try):
        return False
    if node.finalbody:
        return True
    for handler in node.handlers:
        if handler.type is None:
            return True
        names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(isinstance(n, ast.Name) and n.id == "BaseException" for n in names):
            return True
    return False


def _own_nodes(function: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a function, not those of functions nested in it (other code objects)."""
    for child in ast.iter_child_nodes(function):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        yield child
        yield from _own_nodes(child)


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def uncovered_delivery_points(source: str, filename: str = "<audit>") -> list[str]:
    """Delivery points inside cleanup-protected blocks that no exception-table entry covers."""
    tree = ast.parse(source)
    module_code = compile(source, filename, "exec")
    codes = {(c.co_name, c.co_firstlineno): c for c in _code_objects(module_code)}
    problems = []
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        first = min([function.lineno, *(d.lineno for d in function.decorator_list)])
        code = codes.get((function.name, first))
        assert code is not None, f"no code object for {function.name} at line {first}"
        spans = [
            (node.body[0].lineno, node.body[-1].end_lineno or node.body[-1].lineno)
            for node in _own_nodes(function)
            if _is_cleanup(node)
        ]
        if not spans:
            continue
        entries = dis.Bytecode(code).exception_entries
        for instruction in dis.get_instructions(code):
            line = instruction.positions.lineno if instruction.positions else None
            if instruction.opname not in DELIVERY or line is None:
                continue
            if not any(start <= line <= end for start, end in spans):
                continue
            if not any(e.start <= instruction.offset < e.end for e in entries):
                problems.append(
                    f"{function.name}, line {line}: {instruction.opname} at offset {instruction.offset}"
                )
    return problems


def _sync_modules() -> list[types.ModuleType]:
    """The pure SyncMap and, where the C core imports, the C variant's Python part (its mutex-held paths)."""
    modules = [ftmap._sync]
    if "c" in _impl.variants("SyncMap"):
        modules.append(importlib.import_module("ftmap._sync_c"))
    return modules


@pytest.mark.parametrize("module", _sync_modules(), ids=lambda m: m.__name__)
def test_no_async_exception_can_skip_a_syncmap_cleanup_handler(module: types.ModuleType) -> None:
    source = inspect.getsource(module)
    assert uncovered_delivery_points(source, module.__file__) == []


@pytest.mark.skipif(sys.version_info[:2] != (3, 13), reason="the exception-table gap is CPython 3.13's")
def test_the_audit_finds_the_gap_it_looks_for() -> None:
    # The shape the dirty-map build had before: an `if` ending a loop body inside a try.
    source = (
        "def build(items, dirty):\n"
        "    try:\n"
        "        for key, entry in items:\n"
        "            if entry.deleted:\n"
        "                dirty.pop(key)\n"
        "    except BaseException:\n"
        "        undo()\n"
        "        raise\n"
    )
    problems = uncovered_delivery_points(source)
    assert len(problems) == 1 and problems[0].startswith("build, line 4: JUMP_BACKWARD"), problems
