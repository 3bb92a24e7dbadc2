"""octoDNS's key order: each mapping's keys in natural sort order (``a2`` before ``a10``).

octoDNS's YamlProvider (``enforce_order: true``, its default) rejects a file whose keys are out of
that order, the order natsort's default key gives, which is what octoDNS itself sorts with. We
serve such a file, but warn at every key that sorts before a key written above it.
"""

from __future__ import annotations

import re
from typing import Any

from natsort import natsort_keygen

from anycastedge.config.source import MarkedDict
from anycastedge.errors import Location, Problem

_NATURAL = natsort_keygen()  # a pure function: building it costs more than using it
_DIGITS = re.compile(r"[0-9]+")


def natural_less(a: Any, b: Any) -> bool:
    """Whether ``a`` sorts before ``b`` in natsort's default order; TypeError if incomparable.

    natsort splits a string into text and number chunks and compares those. Two ASCII strings
    share every chunk before the point where they first differ, so the chunks there decide:
    two text characters compare as characters, two numbers (the digit runs around that point)
    as numbers. Most keys are settled so, without building natsort's keys, which is most of
    the cost of checking a large zone; the rest (a digit against text, equal numbers written
    differently, non-ASCII) go to natsort.
    """
    if type(a) is str and type(b) is str and a.isascii() and b.isascii():
        n = min(len(a), len(b))
        i = 0
        while i < n and a[i] == b[i]:
            i += 1
        start = i
        while start and a[start - 1].isdigit():
            start -= 1
        if start == i:  # not inside a number
            if i == n:
                return len(a) < len(b)  # a prefix sorts first
            if not a[i].isdigit() and not b[i].isdigit():
                return a[i] < b[i]
        elif i < n and (a[i].isdigit() or b[i].isdigit()):
            x, y = int(_DIGITS.match(a, start)[0]), int(_DIGITS.match(b, start)[0])  # type: ignore[index]
            if x != y:
                return x < y
    return bool(_NATURAL(a) < _NATURAL(b))


class KeyOrder:
    """Follows one mapping's keys as they come, and says where one is out of order."""

    __slots__ = ("highest", "subject")

    def __init__(self, subject: str) -> None:
        self.highest: Any = None
        self.subject = subject

    def out_of_order(self, key: Any) -> bool:
        """Note ``key``; whether it sorts before a key noted before it."""
        if self.highest is not None:
            try:
                if natural_less(key, self.highest):
                    return True
            except TypeError:  # keys of types natsort cannot compare: octoDNS fails on them too
                return False
        self.highest = key
        return False

    def problem(self, key: Any, where: Location) -> Problem:
        """The warning for ``key``, out of order at ``where``."""
        return Problem(
            f'keys out of order: "{key}" sorts before "{self.highest}"; octoDNS would reject '
            "this file (its YamlProvider enforces key order by default)",
            where,
            self.subject or (str(key) if key is not None else "") or "@",
            warning=True,
        )


def nested_key_order(node: Any, subject: str, found: list[Problem]) -> None:
    """Key-order warnings for every mapping inside one top-level entry."""
    if type(node) is list:
        for item in node:
            nested_key_order(item, subject, found)
    elif type(node) is MarkedDict:
        order = KeyOrder(subject)
        for key, value in node.items():
            if order.out_of_order(key):
                found.append(order.problem(key, node.where(key)))
            if type(value) is MarkedDict or type(value) is list:
                nested_key_order(value, subject, found)
