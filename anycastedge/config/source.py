"""YAML loading that keeps, for every mapping and every key, where it was written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode

from anycastedge.errors import ConfigError, Location, Problem


class MarkedDict(dict[Any, Any]):
    """A dict from YAML that knows its own location and the location of each key."""

    location: Location
    key_locations: dict[Any, Location]

    def where(self, key: Any) -> Location:
        """Location of ``key`` if it was written, else of the mapping itself."""
        return self.key_locations.get(key, self.location)


def _location(mark: yaml.Mark) -> Location:
    return Location(mark.name, mark.line + 1, mark.column + 1)


class _MarkingLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are MarkedDicts and whose duplicate keys are errors."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> MarkedDict:
        self.flatten_mapping(node)
        result = MarkedDict()
        result.location = _location(node.start_mark)
        result.key_locations = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise ConfigError(
                    [Problem("unhashable mapping key", _location(key_node.start_mark))]
                ) from None
            if key in result:
                raise ConfigError(
                    [Problem(f"duplicate key {key!r}", _location(key_node.start_mark))]
                )
            result[key] = self.construct_object(value_node, deep=deep)
            result.key_locations[key] = _location(key_node.start_mark)
        return result


_MarkingLoader.add_constructor(
    "tag:yaml.org,2002:map",
    _MarkingLoader.construct_mapping,
)


def load_yaml(path: Path | str, text: str | None = None) -> Any:
    """Parse one YAML file; syntax errors become a ConfigError with file:line."""
    name = str(path)
    try:
        if text is None:
            text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(f"cannot read: {exc}", Location(name))]) from None
    loader = _MarkingLoader(text)
    loader.name = name
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = _location(mark) if mark else Location(name)
        if mark is not None:
            where = Location(name, where.line, where.column)
        raise ConfigError([Problem(f"YAML syntax: {exc.problem or exc}", where)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(f"YAML: {exc}", Location(name))]) from None
    finally:
        loader.dispose()
