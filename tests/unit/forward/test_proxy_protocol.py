"""PROXY protocol v1/v2: encoders, the stream parser, and what it refuses."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anycastedge.forward.proxy_protocol import (
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    NeedMore,
    Parsed,
    ProxyHeaderError,
    encode_v1,
    encode_v1_unknown,
    encode_v2,
    encode_v2_local,
    parse,
)

ports = st.integers(0, 65535)
v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str)
pairs = st.one_of(
    st.tuples(st.tuples(v4, ports), st.tuples(v4, ports)),
    st.tuples(st.tuples(v6, ports), st.tuples(v6, ports)),
)
Pair = tuple[tuple[str, int], tuple[str, int]]
Encoder = tuple[int, Callable[[tuple[str, int], tuple[str, int]], bytes]]
encoders: st.SearchStrategy[Encoder] = st.sampled_from([(1, encode_v1), (2, encode_v2)])


def canonical(address: tuple[str, int]) -> tuple[str, int]:
    return str(ipaddress.ip_address(address[0])), address[1]


# -- encoding, byte for byte -------------------------------------------------------------------


def test_v1_bytes() -> None:
    header = encode_v1(("192.0.2.1", 56324), ("198.51.100.2", 443))
    assert header == b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"
    header = encode_v1(("2001:DB8::1", 1), ("2001:db8:0:0::2", 65535))
    assert header == b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n"
    assert encode_v1_unknown() == b"PROXY UNKNOWN\r\n"


def test_v2_bytes_as_the_spec_lays_them_out() -> None:
    # Section 2.2: 12-byte signature, 0x21 (v2, PROXY), 0x11 (AF_INET, STREAM), length 12,
    # then source and destination addresses and ports, in network byte order.
    expected = bytes.fromhex(
        "0d0a0d0a000d0a515549540a"  # signature
        "21" "11" "000c"  # version/command, family/transport, length
        "c0000201" "c6336402"  # 192.0.2.1, 198.51.100.2
        "dc04" "01bb"  # 56324, 443
    )
    assert encode_v2(("192.0.2.1", 56324), ("198.51.100.2", 443)) == expected
    six = encode_v2(("2001:db8::1", 1), ("::1", 2))
    assert six[12:16] == b"\x21\x21\x00\x24"  # AF_INET6 + STREAM, 36 bytes follow
    assert six[16:] == (
        bytes.fromhex("20010db8000000000000000000000001")
        + bytes.fromhex("00000000000000000000000000000001")
        + b"\x00\x01\x00\x02"
    )
    assert encode_v2_local() == V2_SIGNATURE + b"\x20\x00\x00\x00"


def test_encoders_refuse_mixed_families_and_bad_ports() -> None:
    for encode in (encode_v1, encode_v2):
        with pytest.raises(ValueError, match="family"):
            encode(("192.0.2.1", 1), ("::1", 2))
        with pytest.raises(ValueError, match="port"):
            encode(("192.0.2.1", 65536), ("192.0.2.2", 2))
        with pytest.raises(ValueError, match="zone"):
            encode(("fe80::1%eth0", 1), ("fe80::2", 2))


# -- parsing -----------------------------------------------------------------------------------


@settings(max_examples=200)
@given(pairs, encoders, st.binary(max_size=40))
def test_round_trip(
    pair: Pair,
    encoder: Encoder,
    payload: bytes,
) -> None:
    version, encode = encoder
    source, destination = pair
    header = encode(source, destination)
    expected = Parsed(version, canonical(source), canonical(destination), len(header))
    assert parse(header) == expected
    assert parse(header + payload) == expected  # the payload after it is not the header's


@settings(max_examples=60)
@given(pairs, encoders)
def test_every_split_needs_more_then_gives_the_same_result(
    pair: Pair, encoder: Encoder
) -> None:
    _, encode = encoder
    header = encode(*pair)
    whole = parse(header + b"payload")
    for cut in range(len(header)):
        partial = parse(header[:cut])
        assert isinstance(partial, NeedMore)
        assert cut < partial.at_least <= len(header)
    assert parse(header) == whole


@pytest.mark.parametrize(
    "header",
    [encode_v1_unknown(), b"PROXY UNKNOWN 1.2.3.4 whatever\r\n", encode_v2_local()],
)
def test_unknown_and_local_carry_no_addresses(header: bytes) -> None:
    for cut in range(len(header)):
        assert isinstance(parse(header[:cut]), NeedMore)
    parsed = parse(header + b"GET /")
    assert isinstance(parsed, Parsed)
    assert (parsed.source, parsed.destination, parsed.length) == (None, None, len(header))


def test_v1_longest_lines_from_the_spec() -> None:
    ffff = ":".join(["ffff"] * 8)
    line = f"PROXY TCP6 {ffff} {ffff} 65535 65535\r\n".encode()
    assert len(line) == 104
    parsed = parse(line)
    assert parsed == Parsed(1, (ffff, 65535), (ffff, 65535), 104)
    line = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"
    assert parse(line) == Parsed(1, ("255.255.255.255", 65535), ("255.255.255.255", 65535), 56)
    # UNKNOWN may fill the line up to the 107-byte limit, CRLF included, and not beyond.
    longest = b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 16) + b"\r\n"
    assert len(longest) == V1_MAX_LENGTH
    assert parse(longest) == Parsed(1, None, None, V1_MAX_LENGTH)
    with pytest.raises(ProxyHeaderError, match="107"):
        parse(b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 15) + b"\r\n")


def v2(command: int, family: int, block: bytes, length: int | None = None) -> bytes:
    size = len(block) if length is None else length
    return V2_SIGNATURE + struct.pack("!BBH", command, family, size) + block


INET_BLOCK = bytes.fromhex("c0000201c6336402dc0401bb")


def test_v2_tlvs_are_skipped() -> None:
    tlvs = b"\x01\x00\x02h2" + b"\x04\x00\x00" + b"\x05\x00\x03abc"  # ALPN, NOOP, UNIQUE_ID
    header = v2(0x21, 0x11, INET_BLOCK + tlvs)
    parsed = parse(header + b"\x16\x03\x01")
    assert parsed == Parsed(2, ("192.0.2.1", 56324), ("198.51.100.2", 443), len(header))
    # PROXY with AF_UNSPEC: no addresses, the block skipped.
    assert parse(v2(0x21, 0x00, b"abc")) == Parsed(2, None, None, 19)
    # LOCAL ignores whatever family and block it was sent with.
    assert parse(v2(0x20, 0x11, INET_BLOCK)) == Parsed(2, None, None, 28)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GET / HTTP/1.1\r\n", "not a PROXY protocol header"),
        (b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c", "not a PROXY protocol header"),
        (b"PROXYTCP4", "not a PROXY protocol header"),
        (b"PROXY UNKNOWN " + b"x" * 100, "without CRLF in its first 107"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "LF without CR"),
        (b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "CR not followed by LF"),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "none of TCP4"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "exactly"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "exactly"),
        (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "exactly"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", "exactly"),
        (b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n", "not an IP address"),
        (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "not an IP address"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "not IPv4"),
        (b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n", "not IPv6"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "zone"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "above 65535"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", "not a decimal"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n", "not a decimal"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 123456\r\n", "not a decimal"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xd9\xa1\r\n", "not US-ASCII"),
        (v2(0x11, 0x11, INET_BLOCK), "version 1, not 2"),
        (v2(0x22, 0x11, INET_BLOCK), "neither LOCAL nor PROXY"),
        (v2(0x21, 0x41, INET_BLOCK), "undefined"),
        (v2(0x21, 0x13, INET_BLOCK), "undefined"),
        (v2(0x21, 0x31, b"\x00" * 216), "AF_UNIX"),
        (v2(0x21, 0x12, INET_BLOCK), "not STREAM"),
        (v2(0x21, 0x11, INET_BLOCK[:8]), "shorter than the 12-byte"),
        (v2(0x21, 0x21, INET_BLOCK + b"\x00" * 20), "shorter than the 36-byte"),
        (v2(0x21, 0x11, b"", length=0xFFFF), "over the 4096-byte limit"),
        (v2(0x21, 0x11, INET_BLOCK + b"\x01\x00"), "TLV header truncated"),
        (v2(0x21, 0x11, INET_BLOCK + b"\x01\x00\x05abc"), "TLV runs past"),
    ],
)
def test_malformed_headers_refused(data: bytes, message: str) -> None:
    with pytest.raises(ProxyHeaderError, match=message):
        parse(data)


def test_v2_length_is_refused_before_the_bytes_arrive() -> None:
    # A peer announcing a huge header is refused at once, not buffered for.
    with pytest.raises(ProxyHeaderError, match="limit"):
        parse(v2(0x21, 0x11, b"", length=5000))
    assert parse(v2(0x21, 0x11, b"", length=5000), limit=20_000) == NeedMore(5016)


def check_no_crash(data: bytes) -> None:
    try:
        result = parse(data)
    except ProxyHeaderError:
        return
    if isinstance(result, Parsed):
        assert 0 < result.length <= len(data)
    else:
        assert result.at_least > len(data)


@settings(max_examples=400)
@given(
    st.sampled_from(
        [b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN", V2_SIGNATURE,
         V2_SIGNATURE + b"\x21\x11", V2_SIGNATURE + b"\x21\x21\x00\x24", V2_SIGNATURE + b"\x20"]
    ),
    st.binary(max_size=140),
)
def test_garbage_never_crashes(prefix: bytes, tail: bytes) -> None:
    check_no_crash(prefix + tail)


@settings(max_examples=300)
@given(pairs, encoders, st.data())
def test_mutated_headers_never_crash(
    pair: Pair, encoder: Encoder, data: st.DataObject
) -> None:
    _, encode = encoder
    header = bytearray(encode(*pair))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(header) - 1))
        header[at] = data.draw(st.integers(0, 255))
    check_no_crash(bytes(header))
    check_no_crash(bytes(header[: data.draw(st.integers(0, len(header)))]))
