"""Config formats, and the limits that keep hostile content from costing more than a refusal.

``parse_config(data, format, limits=...)`` turns bytes into a plain dict or
raises a ParseError. Every way content could make a load hang, exhaust
memory or recurse past the interpreter's limit is refused first, quickly,
as a ConfigLimitError (a ParseError):

- ``max_bytes``: the content's size (a file reader reads at most this + 1).
- ``max_depth``: nested containers on the deepest path (``{"a": [1]}`` is 2).
  Freezing, comparing and validating a config recurse once per level; JSON
  nested 3,000 deep parses, and then every one of those would raise
  RecursionError.
- ``max_nodes``: every key, value and item, counted as if every YAML alias
  were expanded (which is what freezing it for publishing does).
- ``max_aliases``: YAML alias references (``*name``) in one document. An
  alias bomb ("billion laughs") is a few hundred bytes that expand to
  billions of nodes; it is refused while it is composed, before anything is
  expanded. An alias inside the node it names (``a: &a [*a]``) would make
  an infinitely deep config: refused as ParseError.

A UTF-8 byte order mark at the start is skipped (editors on Windows write
one); bytes that are not UTF-8 are a ParseError.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._config_errors import ConfigLimitError, ParseError

__all__ = ["FORMATS", "ConfigLimits", "check_structure", "detect_format", "parse_config"]


@dataclass(frozen=True)
class ConfigLimits:
    """What a config may cost before it is refused (see the module docstring); every field must be >= 1."""

    max_bytes: int = 16 * 1024 * 1024
    max_depth: int = 100
    max_nodes: int = 1_000_000
    max_aliases: int = 1_000

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_depth", "max_nodes", "max_aliases"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ConfigLimits.{name} must be an int >= 1, not {value!r}")


DEFAULT_LIMITS = ConfigLimits()


def check_structure(content: object, limits: ConfigLimits) -> None:
    """Refuse content nested deeper than max_depth or with more than max_nodes nodes.

    Iterative (it never recurses), and it stops as soon as a limit is passed,
    so its cost is bounded by max_nodes even for shared or cyclic structures
    (a cycle is infinitely deep). Mappings, lists, tuples, sets and
    frozensets are containers; their keys and items are nodes.
    """
    max_depth, max_nodes = limits.max_depth, limits.max_nodes
    nodes = 1
    stack: list[tuple[object, int]] = [(content, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            raise ConfigLimitError("max_depth", max_depth, f"the config is nested more than {max_depth} deep")
        if isinstance(value, Mapping):
            children: Any = value.values()
            nodes += 2 * len(value)
        elif isinstance(value, list | tuple | set | frozenset):
            children = value
            nodes += len(value)
        else:
            continue
        if nodes > max_nodes:
            raise ConfigLimitError("max_nodes", max_nodes, f"the config has more than {max_nodes} nodes")
        for child in children:
            if isinstance(child, Mapping | list | tuple | set | frozenset):
                stack.append((child, depth + 1))


# -- the formats ---------------------------------------------------------------------------------


def _parse_json(text: str, limits: ConfigLimits) -> Any:
    return json.loads(text)


def _parse_toml(text: str, limits: ConfigLimits) -> Any:
    return tomllib.loads(text)


def _parse_env(text: str, limits: ConfigLimits) -> dict[str, str]:
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


def _parse_yaml(text: str, limits: ConfigLimits) -> Any:
    try:
        import yaml  # type: ignore[import-untyped, unused-ignore]  # noqa: PLC0415  (optional)
    except ImportError as error:
        raise ParseError("YAML needs PyYAML: pip install pyyaml") from error
    loader = _limited_yaml_loader(yaml)(text, limits)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


_YAML_LOADER: Any = None


def _limited_yaml_loader(yaml: Any) -> Any:
    """yaml.SafeLoader (pure Python: its composer can be extended) that enforces ConfigLimits
    while it composes the node graph, before anything is constructed or expanded."""
    global _YAML_LOADER  # built once, on first use: PyYAML is optional
    if _YAML_LOADER is not None:
        return _YAML_LOADER

    class LimitedSafeLoader(yaml.SafeLoader):  # type: ignore[misc, name-defined, unused-ignore]
        def __init__(self, stream: str, limits: ConfigLimits) -> None:
            super().__init__(stream)
            self.limits = limits
            self.aliases = 0
            self.depth = 0
            self.open_anchors: list[str] = []  # anchors of the collections being composed

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > self.limits.max_aliases:
                    raise ConfigLimitError(
                        "max_aliases", self.limits.max_aliases, "the YAML document has too many aliases"
                    )
                if event.anchor in self.open_anchors:
                    raise ParseError(
                        f"recursive YAML alias *{event.anchor} (inside the node &{event.anchor} it names): "
                        f"that config would be infinitely deep;{event.start_mark}"
                    )
                return super().compose_node(parent, index)
            self.depth += 1
            if self.depth > self.limits.max_depth:
                raise ConfigLimitError(
                    "max_depth",
                    self.limits.max_depth,
                    f"the YAML document is nested more than {self.limits.max_depth} deep {event.start_mark}",
                )
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                self.open_anchors.append(anchor)
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1
                if anchor is not None:
                    self.open_anchors.pop()

        def get_single_node(self) -> Any:
            node = super().get_single_node()
            if node is not None:
                _check_yaml_graph(yaml, node, self.limits)
            return node

    _YAML_LOADER = LimitedSafeLoader
    return _YAML_LOADER


def _check_yaml_graph(yaml: Any, root: Any, limits: ConfigLimits) -> None:
    """The size and depth the node graph would have with every alias expanded, computed once per
    node (aliases share nodes), iteratively; refused before construction if over the limits."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    composing: set[int] = set()  # on the current path: met again, it is a cycle
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        if not children_done and key in composing:
            raise ParseError(
                "a YAML node contains itself (a recursive alias): that config would be infinitely deep"
            )
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            sizes[key], depths[key] = 1, 0
            continue
        if not children_done:
            composing.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        size = 1 + sum(sizes.get(id(child), 0) for child in children)
        depth = 1 + max((depths.get(id(child), 0) for child in children), default=0)
        if size > limits.max_nodes:
            raise ConfigLimitError(
                "max_nodes",
                limits.max_nodes,
                f"the YAML document expands to more than {limits.max_nodes} nodes",
            )
        if depth > limits.max_depth:
            raise ConfigLimitError(
                "max_depth", limits.max_depth, f"the YAML document expands deeper than {limits.max_depth}"
            )
        sizes[key], depths[key] = size, depth
        composing.discard(key)


FORMATS: dict[str, Callable[[str, ConfigLimits], Any]] = {
    "json": _parse_json,
    "toml": _parse_toml,
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
        raise ValueError(f"cannot tell the format of {name!r}: give format= one of {sorted(FORMATS)}")
    return _SUFFIXES[suffix]


def check_format(format: str) -> str:
    if format not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, not {format!r}")
    return format


def parse_config(data: bytes, format: str, *, limits: ConfigLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Parse a config file's bytes into a plain dict.

    Raises ParseError if they are not a valid mapping in that format, and
    ConfigLimitError (a ParseError) if they exceed ``limits``.
    """
    check_format(format)
    if len(data) > limits.max_bytes:
        raise ConfigLimitError(
            "max_bytes", limits.max_bytes, f"the config is larger than {limits.max_bytes} bytes"
        )
    try:
        text = data.decode("utf-8-sig")  # -sig: a leading byte order mark is skipped
    except UnicodeDecodeError as error:
        raise ParseError(f"not UTF-8: {error}") from error
    try:
        parsed = FORMATS[format](text, limits)
    except ParseError:
        raise
    except RecursionError as error:  # a parser that recurses per level, on content deeper than the stack
        raise ConfigLimitError(
            "max_depth", limits.max_depth, f"the {format} content is nested too deep to parse"
        ) from error
    except Exception as error:  # each parser has its own error types
        raise ParseError(f"invalid {format}: {error}") from error
    if parsed is None:  # an empty YAML document
        parsed = {}
    if not isinstance(parsed, Mapping):
        raise ParseError(f"the top level of a config must be a mapping, not {type(parsed).__name__}")
    check_structure(parsed, limits)
    return dict(parsed)
