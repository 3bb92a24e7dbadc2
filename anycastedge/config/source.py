"""YAML loading that keeps, for every mapping and every key, where it was written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode

from anycastedge.errors import ConfigError, Location, Problem


class MarkedDict(dict[Any, Any]):
    """A dict from YAML that knows its own location and the location of each key."""

    location: Location
    key_locations: dict[Any, Location]

    def where(self, key: Any) -> Location:
        """Location of ``key`` if it was written, else of the mapping itself."""
        return self.key_locations.get(key, self.location)


# libyaml's parser when PyYAML was built with it (the wheels are): about ten times faster than the
# pure-Python one on a large zone, and its nodes keep the same marks.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Marking(SafeConstructor):
    """Mappings become MarkedDicts; duplicate and unhashable keys are errors."""

    def __init__(self, stream: str, name: str) -> None:
        super().__init__(stream)  # type: ignore[call-arg]  # the loader's, which takes a stream
        self.source_name = name  # libyaml's marks do not carry the file name

    def location(self, mark: yaml.Mark) -> Location:
        """Where ``mark`` is, 1-based, in this file."""
        return Location(self.source_name, mark.line + 1, mark.column + 1)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> MarkedDict:
        self.flatten_mapping(node)
        result = MarkedDict()
        result.location = self.location(node.start_mark)
        result.key_locations = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise ConfigError(
                    [Problem("unhashable mapping key", self.location(key_node.start_mark))]
                ) from None
            if key in result:
                raise ConfigError(
                    [Problem(f"duplicate key {key!r}", self.location(key_node.start_mark))]
                )
            result[key] = self.construct_object(value_node, deep=deep)
            result.key_locations[key] = self.location(key_node.start_mark)
        return result


class _FastLoader(_Marking, _BaseLoader):
    """libyaml's parser."""


class _PythonLoader(_Marking, yaml.SafeLoader):
    """PyYAML's own parser: slower, but its syntax errors say more (used to report them)."""


_FastLoader.add_constructor("tag:yaml.org,2002:map", _FastLoader.construct_mapping)  # type: ignore[type-var]
_PythonLoader.add_constructor("tag:yaml.org,2002:map", _PythonLoader.construct_mapping)  # type: ignore[type-var]


def load_yaml(path: Path | str, text: str | None = None) -> Any:
    """Parse one YAML file; syntax errors become a ConfigError with file:line."""
    name = str(path)
    try:
        if text is None:
            text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(f"cannot read: {exc}", Location(name))]) from None
    try:
        return _parse(_FastLoader, text, name)
    except ConfigError:
        # A broken file: parse it again with PyYAML's own parser, whose messages are clearer
        # than libyaml's ("expected ',' or ']', but got ':'").
        return _parse(_PythonLoader, text, name)


def _parse(kind: Any, text: str, name: str) -> Any:
    loader = kind(text, name)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = loader.location(mark) if mark else Location(name)
        raise ConfigError([Problem(f"YAML syntax: {exc.problem or exc}", where)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(f"YAML: {exc}", Location(name))]) from None
    finally:
        loader.dispose()
