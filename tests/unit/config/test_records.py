"""Values straight to wire form: the shortcuts give exactly what the general converter gives."""

from __future__ import annotations

import ipaddress
from typing import Any

import dns.name
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anycastedge.config import records
from anycastedge.config.records import to_rdata, to_wire
from anycastedge.config.zones import _owner_wire

LABEL = st.text(alphabet="abcXYZ019_-*", min_size=1, max_size=70)
NAME_TEXT = st.lists(LABEL, min_size=1, max_size=5).map(".".join)
# Values near the shortcuts' edges: canonical and not, valid and not.
ADDRESS_TEXT = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=6).map(lambda a: a.exploded),
    st.ip_addresses(v=4).map(lambda a: str(a).replace(".", ".0", 1)),
    st.text(alphabet="0123456789abcdef.:", max_size=20),
    st.integers(),
    st.none(),
)
TARGET = st.one_of(NAME_TEXT.map(lambda n: n + "."), NAME_TEXT, st.just("."), st.integers())
TEXT_VALUE = st.one_of(st.text(max_size=300), st.integers(), st.none())


def both(rdtype: str, value: Any) -> tuple[object, object]:
    """What to_wire gives (or its error's reasons), and what to_rdata gives (likewise)."""

    def outcome(convert: Any) -> object:
        try:
            return convert()
        except ValueError as exc:
            return ("error", getattr(exc, "reasons", None) or (str(exc),))

    def general() -> tuple[bytes, bytes]:
        rdata = to_rdata(rdtype, value)
        return rdata.to_wire(), rdata.to_digestable()

    return outcome(lambda: to_wire(rdtype, value)), outcome(general)


@settings(max_examples=600, deadline=None)
@given(rdtype=st.sampled_from(["A", "AAAA"]), value=ADDRESS_TEXT)
def test_addresses(rdtype: str, value: Any) -> None:
    """Addresses: the same bytes, or the same reasons."""
    fast, general = both(rdtype, value)
    assert fast == general


@settings(max_examples=600, deadline=None)
@given(rdtype=st.sampled_from(["CNAME", "DNAME", "NS", "PTR"]), value=TARGET)
def test_names(rdtype: str, value: Any) -> None:
    """Names: the same bytes, or the same reasons."""
    fast, general = both(rdtype, value)
    assert fast == general


@settings(max_examples=400, deadline=None)
@given(
    preference=st.one_of(st.integers(-1, 70000), st.booleans(), st.text(max_size=3)),
    exchange=TARGET,
    key=st.sampled_from(["preference", "priority"]),
)
def test_mx(preference: Any, exchange: Any, key: str) -> None:
    """MX: the same bytes, or the same reasons."""
    fast, general = both("MX", {key: preference, "exchange": exchange})
    assert fast == general


@settings(max_examples=600, deadline=None)
@given(rdtype=st.sampled_from(["TXT", "SPF"]), value=TEXT_VALUE)
def test_text(rdtype: str, value: Any) -> None:
    """TXT and SPF: the same chunks, or the same reasons."""
    fast, general = both(rdtype, value)
    assert fast == general


ORIGIN = dns.name.from_text("owner.test.")


@settings(max_examples=1000, deadline=None)
@given(subject=st.one_of(NAME_TEXT, st.text(max_size=40), st.sampled_from(["@", "a.@", "*"])))
def test_owner_names(subject: str) -> None:
    """A plain owner name's wire form is dnspython's; anything else is left to dnspython."""
    wire = _owner_wire(subject, ORIGIN.to_wire())  # type: ignore[arg-type]
    if wire is None:
        return
    name = dns.name.from_text(subject, ORIGIN) if subject else ORIGIN
    assert wire == name.canonicalize().to_wire()


@pytest.mark.parametrize(
    ("rdtype", "value"),
    [
        ("A", "192.0.2.1"),
        ("AAAA", "2001:db8::1"),
        ("CNAME", "target.example.com."),
        ("MX", {"preference": 10, "exchange": "mx.example.com."}),
        ("TXT", "v=spf1 -all"),
    ],
)
def test_shortcuts_are_taken(rdtype: str, value: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The common values take the shortcut, without dnspython: the same bytes it gives."""
    expected = to_rdata(rdtype, value).to_wire()

    def general(rdtype: str, value: Any) -> None:
        raise AssertionError("the general converter was used")

    monkeypatch.setattr(records, "to_rdata", general)
    wire, canonical = to_wire(rdtype, value)
    assert wire == canonical == expected
    if rdtype == "A":
        assert wire == ipaddress.ip_address(value).packed
