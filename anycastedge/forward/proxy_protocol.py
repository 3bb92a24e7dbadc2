"""PROXY protocol headers, versions 1 (text) and 2 (binary), as HAProxy's proxy-protocol.txt.

Encoders for the header sent to endpoints first, and a parser for the header taken from trusted
peers, usable on a stream: it says how many bytes the header took, or that more are needed.
Standard library only; no I/O.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # the longest v1 line, CRLF included (the spec's 108-byte buffer, less a NUL)
V2_MAX_LENGTH = 16 + 65535  # what the 16-bit length allows; `parse` takes a lower limit
DEFAULT_LIMIT = 4096  # bytes a v2 header may take (addresses and TLVs) before it is refused

_V2_HEADER = struct.Struct("!12sBBH")
_V2_PORTS = struct.Struct("!HH")
_V2_VERSION = 0x20
_CMD_LOCAL = 0x0
_CMD_PROXY = 0x1
_AF_UNSPEC = 0x0
_AF_INET = 0x1
_AF_INET6 = 0x2
_AF_UNIX = 0x3
_STREAM = 0x1
_ADDRESS_LENGTH = {_AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}  # addresses and ports

Address = tuple[str, int]  # (IP address literal, port)


class ProxyHeaderError(ValueError):
    """The bytes are not a well-formed PROXY header (the connection should be closed)."""


@dataclass(frozen=True, slots=True)
class Parsed:
    """A complete header: the addresses it carries and the bytes it took."""

    version: int  # 1 or 2
    source: Address | None  # None: v1 UNKNOWN, v2 LOCAL or AF_UNSPEC (use the connection's own)
    destination: Address | None
    length: int  # bytes of the header; the payload starts after them


@dataclass(frozen=True, slots=True)
class NeedMore:
    """The bytes so far are the start of a header: read more and parse again from the start."""

    at_least: int  # total bytes needed before the answer can change


def encode_v1(source: Address, destination: Address) -> bytes:
    """``PROXY TCP4|TCP6 src dst sport dport\\r\\n``; both addresses of one family."""
    version = _family(source, destination)
    return (
        f"PROXY TCP{version} {_canonical(source[0])} {_canonical(destination[0])} "
        f"{source[1]} {destination[1]}\r\n"
    ).encode("ascii")


def encode_v1_unknown() -> bytes:
    """The v1 header for a connection whose addresses the sender cannot give."""
    return b"PROXY UNKNOWN\r\n"


def encode_v2(source: Address, destination: Address) -> bytes:
    """The binary header, PROXY command, TCP over IPv4 or IPv6, without TLVs."""
    version = _family(source, destination)
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    block = (
        socket.inet_pton(family, source[0])
        + socket.inet_pton(family, destination[0])
        + _V2_PORTS.pack(source[1], destination[1])
    )
    fam = (_AF_INET if version == 4 else _AF_INET6) << 4 | _STREAM
    return _V2_HEADER.pack(V2_SIGNATURE, _V2_VERSION | _CMD_PROXY, fam, len(block)) + block


def encode_v2_local() -> bytes:
    """The binary header for the sender's own connection (a health check): LOCAL, AF_UNSPEC."""
    return _V2_HEADER.pack(V2_SIGNATURE, _V2_VERSION | _CMD_LOCAL, _AF_UNSPEC, 0)


def header_for(version: int, source: Address, destination: Address) -> bytes:
    """The version 1 or 2 header naming a connection; without addresses if they cannot be told
    (one IPv4, one IPv6), as the spec has it for a connection of unknown origin."""
    try:
        return (encode_v2 if version == 2 else encode_v1)(source, destination)
    except ValueError:
        return encode_v2_local() if version == 2 else encode_v1_unknown()


def parse(data: bytes, limit: int = DEFAULT_LIMIT) -> Parsed | NeedMore:
    """The v1 or v2 header at the start of ``data``, told apart by its first bytes.

    `NeedMore` while ``data`` is a proper prefix of a header; `ProxyHeaderError` as soon as it
    cannot be one. ``limit`` caps a v2 header's total length (TLVs included).
    """
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data, limit)
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    if V2_SIGNATURE.startswith(data) or V1_PREFIX.startswith(data):
        return NeedMore(len(data) + 1)
    raise ProxyHeaderError("not a PROXY protocol header (neither the v1 text nor the v2 signature)")


def _parse_v1(data: bytes) -> Parsed | NeedMore:
    """``PROXY TCP4|TCP6 src dst sport dport\\r\\n`` or ``PROXY UNKNOWN ...\\r\\n``."""
    end = data.find(b"\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyHeaderError(f"v1 header without CRLF in its first {V1_MAX_LENGTH} bytes")
        if b"\r" in data[:-1]:
            raise ProxyHeaderError("v1 header with a CR not followed by LF")
        return NeedMore(len(data) + 1)
    if end == 0 or data[end - 1] != 0x0D:
        raise ProxyHeaderError("v1 header line ends in LF without CR")
    line = data[: end - 1]
    if b"\r" in line:
        raise ProxyHeaderError("v1 header with a CR not followed by LF")
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("v1 header is not US-ASCII") from None
    fields = text.split(" ")
    protocol = fields[1]
    if protocol == "UNKNOWN":  # the spec: whatever follows up to the CRLF is ignored
        return Parsed(1, None, None, end + 1)
    if protocol not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"v1 protocol {protocol[:8]!r} is none of TCP4, TCP6, UNKNOWN")
    if len(fields) != 6:
        raise ProxyHeaderError(
            "v1 header needs exactly: PROXY protocol source destination sport dport,"
            " single spaces"
        )
    version = 4 if protocol == "TCP4" else 6
    source = (_v1_address(fields[2], version), _v1_port(fields[4]))
    destination = (_v1_address(fields[3], version), _v1_port(fields[5]))
    return Parsed(1, source, destination, end + 1)


def _v1_address(text: str, version: int) -> str:
    """The canonical form of a v1 address of the protocol's family."""
    if "%" in text:  # ipaddress would take an IPv6 zone; the protocol has none
        raise ProxyHeaderError(f"v1 address {text[:48]!r} has a zone")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"v1 address {text[:48]!r} is not an IP address") from None
    if address.version != version:
        raise ProxyHeaderError(f"v1 address {text!r} is not IPv{version} as TCP{version} says")
    return str(address)


def _v1_port(text: str) -> int:
    """A decimal port, 0 to 65535, without sign or leading zero."""
    # The line was decoded as ASCII, so isdigit() means 0-9 only.
    if not text.isdigit() or len(text) > 5 or (text[0] == "0" and text != "0"):
        raise ProxyHeaderError(f"v1 port {text[:8]!r} is not a decimal number 0..65535")
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError(f"v1 port {port} is above 65535")
    return port


def _parse_v2(data: bytes, limit: int) -> Parsed | NeedMore:
    """The 16-byte header, then the address block and any TLVs (skipped)."""
    if len(data) < _V2_HEADER.size:
        return NeedMore(_V2_HEADER.size)
    _, version_command, family_transport, length = _V2_HEADER.unpack_from(data)
    if version_command & 0xF0 != _V2_VERSION:
        raise ProxyHeaderError(f"v2 signature with version {version_command >> 4}, not 2")
    command = version_command & 0x0F
    if command not in (_CMD_LOCAL, _CMD_PROXY):
        raise ProxyHeaderError(f"v2 command {command:#x} is neither LOCAL nor PROXY")
    total = _V2_HEADER.size + length
    if total > limit:
        raise ProxyHeaderError(f"v2 header of {total} bytes is over the {limit}-byte limit")
    family = family_transport >> 4
    transport = family_transport & 0x0F
    if family > _AF_UNIX or transport > 2:
        raise ProxyHeaderError(f"v2 family/transport byte {family_transport:#04x} is undefined")
    if command == _CMD_PROXY and family != _AF_UNSPEC:
        if family == _AF_UNIX:
            raise ProxyHeaderError("v2 AF_UNIX addresses are not supported")
        if transport != _STREAM:
            raise ProxyHeaderError(f"v2 transport {transport:#x} is not STREAM (TCP)")
        if length < _ADDRESS_LENGTH[family]:
            raise ProxyHeaderError(
                f"v2 length {length} is shorter than the {_ADDRESS_LENGTH[family]}-byte"
                " address block of its family"
            )
    if len(data) < total:
        return NeedMore(total)
    if command == _CMD_LOCAL or family == _AF_UNSPEC:
        # LOCAL: the proxy's own connection; UNSPEC: no addresses. Either way the receiver
        # uses the connection's own endpoints and skips whatever the block holds.
        return Parsed(2, None, None, total)
    start = _V2_HEADER.size
    if family == _AF_INET:
        size, af = 4, socket.AF_INET
    else:
        size, af = 16, socket.AF_INET6
    source_ip = socket.inet_ntop(af, data[start : start + size])
    destination_ip = socket.inet_ntop(af, data[start + size : start + 2 * size])
    source_port, destination_port = _V2_PORTS.unpack_from(data, start + 2 * size)
    _check_tlvs(data, start + _ADDRESS_LENGTH[family], total)
    return Parsed(
        2,
        (_canonical(source_ip), source_port),
        (_canonical(destination_ip), destination_port),
        total,
    )


def _check_tlvs(data: bytes, offset: int, end: int) -> None:
    """Walks the TLVs after the addresses (their contents are not used): each must fit."""
    while offset < end:
        if end - offset < 3:
            raise ProxyHeaderError(f"v2 TLV header truncated at byte {offset}")
        (size,) = struct.unpack_from("!H", data, offset + 1)
        offset += 3 + size
        if offset > end:
            raise ProxyHeaderError("v2 TLV runs past the header's length")


def _family(source: Address, destination: Address) -> int:
    """4 or 6, the family both addresses share; ValueError otherwise, or for a bad port."""
    if "%" in source[0] or "%" in destination[0]:
        raise ValueError("PROXY headers carry no IPv6 zone")
    versions = {ipaddress.ip_address(host).version for host in (source[0], destination[0])}
    if len(versions) != 1:
        raise ValueError(f"source {source[0]} and destination {destination[0]} differ in family")
    for port in (source[1], destination[1]):
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is outside 0..65535")
    return versions.pop()


def _canonical(address: str) -> str:
    """The address as `ipaddress` writes it (IPv6 compressed, lowercase)."""
    return str(ipaddress.ip_address(address))
