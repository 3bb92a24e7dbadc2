"""YAML loading that keeps, for every mapping and every key, where it was written."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import (
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, ScalarNode

from anycastedge.errors import ConfigError, Location, Problem

Mark = tuple[int, int]  # 0-based line and column, as libyaml counts


class MarkedDict(dict[Any, Any]):
    """A dict from YAML that knows its own location and the location of each key."""

    __slots__ = ("source", "mark", "key_marks")

    def __init__(self, source: str, mark: Mark) -> None:
        super().__init__()
        self.source = source
        self.mark = mark
        self.key_marks: dict[Any, Mark] = {}

    @property
    def location(self) -> Location:
        """Where the mapping starts."""
        return Location(self.source, self.mark[0] + 1, self.mark[1] + 1)

    def where(self, key: Any) -> Location:
        """Location of ``key`` if it was written, else of the mapping itself."""
        line, column = self.key_marks.get(key, self.mark)
        return Location(self.source, line + 1, column + 1)


_MERGE = "tag:yaml.org,2002:merge"
# libyaml's parser when PyYAML was built with it (the wheels are): about ten times faster than the
# pure-Python one on a large zone, and its nodes keep the same marks.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Marking(SafeConstructor):
    """Mappings become MarkedDicts; duplicate and unhashable keys are errors."""

    def __init__(self, stream: str | bytes, name: str) -> None:
        super().__init__(stream)  # type: ignore[call-arg]  # the loader's, which takes a stream
        self.source_name = name  # libyaml's marks do not carry the file name

    def location(self, mark: yaml.Mark) -> Location:
        """Where ``mark`` is, 1-based, in this file."""
        return Location(self.source_name, mark.line + 1, mark.column + 1)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> MarkedDict:
        written = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE)
        self.flatten_mapping(node)
        # Merged keys come first, each mapping merged overriding the ones after it, and the keys
        # written here override them all (YAML's merge key): only those must be unique.
        merged = len(node.value) - written
        result = MarkedDict(self.source_name, (node.start_mark.line, node.start_mark.column))
        explicit: set[Any] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise ConfigError(
                    [Problem("unhashable mapping key", self.location(key_node.start_mark))]
                ) from None
            if index >= merged:
                if key in explicit:
                    raise ConfigError(
                        [Problem(f"duplicate key {key!r}", self.location(key_node.start_mark))]
                    )
                explicit.add(key)
            result[key] = self.construct_object(value_node, deep=deep)
            result.key_marks[key] = (key_node.start_mark.line, key_node.start_mark.column)
        return result


class _FastLoader(_Marking, _BaseLoader):
    """libyaml's parser."""


class _PythonLoader(_Marking, yaml.SafeLoader):
    """PyYAML's own parser: slower, but its syntax errors say more (used to report them)."""


_FastLoader.add_constructor("tag:yaml.org,2002:map", _FastLoader.construct_mapping)  # type: ignore[type-var]
_PythonLoader.add_constructor("tag:yaml.org,2002:map", _PythonLoader.construct_mapping)  # type: ignore[type-var]


def read_text(path: Path | str, text: str | None = None) -> str:
    """The file's text (``text`` if given); unreadable files become a ConfigError."""
    if text is not None:
        return text
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(f"cannot read: {exc}", Location(str(path)))]) from None


def read_bytes(path: Path | str) -> bytes:
    """The file's bytes; an unreadable file becomes a ConfigError."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([Problem(f"cannot read: {exc}", Location(str(path)))]) from None


def load_yaml(path: Path | str, text: str | None = None) -> Any:
    """Parse one YAML file; syntax errors become a ConfigError with file:line."""
    name = str(path)
    text = read_text(path, text)
    try:
        return _parse(_FastLoader, text, name)
    except ConfigError:
        # A broken file: parse it again with PyYAML's own parser, whose messages are clearer
        # than libyaml's ("expected ',' or ']', but got ':'").
        return _parse(_PythonLoader, text, name)


def _parse(kind: Any, text: str, name: str) -> Any:
    try:
        # PyYAML's reader checks the first characters as it is made: a control character there
        # fails here, not in the parse.
        loader = kind(text, name)
    except yaml.reader.ReaderError as exc:
        raise _unreadable(exc, text, name) from None
    try:
        return loader.get_single_data()
    except yaml.reader.ReaderError as exc:
        raise _unreadable(exc, text, name) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = loader.location(mark) if mark else Location(name)
        raise ConfigError([Problem(f"YAML syntax: {exc.problem or exc}", where)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(f"YAML: {exc}", Location(name))]) from None
    finally:
        loader.dispose()


def _unreadable(exc: yaml.reader.ReaderError, text: str, name: str) -> ConfigError:
    """A character YAML does not allow (a control character): where it is, as line and column
    (PyYAML gives its offset in the text)."""
    at = exc.position
    line = text.count("\n", 0, at) + 1
    column = at - text.rfind("\n", 0, at)
    character = exc.character if isinstance(exc.character, int) else ord(exc.character)
    message = f"YAML: character #x{character:04x} is not allowed ({exc.reason})"
    return ConfigError([Problem(message, Location(name, line, column))])


class Unusual(Exception):  # noqa: N818 (a signal, not an error)
    """The streaming reader met YAML it leaves to load_yaml: the caller starts over with that."""


_TAG_CACHE = 4096
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
# Implicit tags the streaming reader builds with PyYAML's own constructors; anything else
# (merge keys, timestamps, explicit tags, anchors and aliases) goes to load_yaml.
_CONSTRUCTED = frozenset(
    {"tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float", _INT}
)


def top_level_items(path: Path | str, text: str | bytes) -> Iterator[tuple[Any, Any, Location]]:
    """The top-level mapping of a YAML file, one (key, value, key location) at a time.

    Values are what load_yaml would give (MarkedDicts for mappings), built straight from
    libyaml's events, so a big file is never held whole as nodes or as data. Raises Unusual,
    possibly after some items, for anything it does not build itself: not a single mapping,
    syntax errors, duplicate keys, anchors, aliases, tags, merge keys, other scalar types.
    """
    if isinstance(text, bytes) and text[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise Unusual()  # UTF-16 or 32, which libyaml reads but a zone file is not (UTF-8 only)
    stream = _Events(_FastLoader(text, str(path)))
    try:
        yield from stream.items()
    except yaml.YAMLError:
        raise Unusual() from None
    finally:
        stream.loader.dispose()


def _at(mark: Any) -> Mark:
    return mark.line, mark.column


class _Events:
    """Builds values from the loader's event stream, as PyYAML's composer and constructor would."""

    __slots__ = ("loader", "name", "next", "tags")

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.name = loader.source_name
        self.next = loader.get_event
        self.tags: dict[str, str] = {}  # plain scalar -> its implicit tag: keys, types, TTLs

    def items(self) -> Iterator[tuple[Any, Any, Location]]:
        get = self.next
        get()  # stream start
        get()  # document start (an empty stream has none: its stream end is the next event)
        start = get()
        if type(start) is not MappingStartEvent:
            raise Unusual()
        self._check_collection(start)
        seen = set()
        while True:
            event = get()
            if type(event) is MappingEndEvent:
                break
            if type(event) is not ScalarEvent:
                raise Unusual()
            key = self._scalar(event)
            if key in seen:
                raise Unusual()
            seen.add(key)
            line, column = _at(event.start_mark)
            yield key, self._value(get()), Location(self.name, line + 1, column + 1)
        get()  # document end
        if type(get()) is not StreamEndEvent:
            raise Unusual()  # more than one document

    def _value(self, event: Any) -> Any:
        kind = type(event)
        if kind is ScalarEvent:
            return self._scalar(event)
        if kind is MappingStartEvent:
            self._check_collection(event)
            mapping = MarkedDict(self.name, _at(event.start_mark))
            marks = mapping.key_marks
            get = self.next
            while True:
                key_event = get()
                if type(key_event) is MappingEndEvent:
                    return mapping
                if type(key_event) is not ScalarEvent:
                    raise Unusual()
                key = self._scalar(key_event)
                if key in mapping:
                    raise Unusual()
                mapping[key] = self._value(get())
                marks[key] = _at(key_event.start_mark)
        if kind is SequenceStartEvent:
            self._check_collection(event)
            items: list[Any] = []
            get = self.next
            while True:
                item = get()
                if type(item) is SequenceEndEvent:
                    return items
                items.append(self._value(item))
        raise Unusual()  # an alias

    def _scalar(self, event: ScalarEvent) -> Any:
        if event.anchor is not None or (event.tag is not None and event.tag != "!"):
            raise Unusual()
        value = event.value
        if not event.implicit[0]:  # quoted: always a string
            return value
        tag = self.tags.get(value)
        if tag is None:
            tag = self.loader.resolve(ScalarNode, value, (True, False))
            if len(self.tags) < _TAG_CACHE:
                self.tags[value] = tag
        if tag == _STR:
            return value
        if tag == _INT and value.isdigit() and (value[0] != "0" or len(value) == 1):
            return int(value)
        if tag not in _CONSTRUCTED:
            raise Unusual()
        node = ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)  # type: ignore[arg-type]
        return self.loader.yaml_constructors[tag](self.loader, node)

    @staticmethod
    def _check_collection(event: Any) -> None:
        if event.anchor is not None or (event.tag is not None and event.tag != "!"):
            raise Unusual()


def writable_by_others(path: Path | str) -> Problem | None:
    """A warning when every user of the host may change ``path`` (what the POP serves)."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return None  # reading it reports that
    if not mode & stat.S_IWOTH:
        return None
    return Problem(
        f"writable by every user of this host, who could change what this POP serves "
        f"(chmod o-w {path})",
        Location(str(path)),
        warning=True,
    )
