"""octoDNS record values to dnspython rdata: one converter per type, errors as reasons."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import socket
import struct
from collections.abc import Callable, Mapping
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import idna
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

Rdata = dns.rdata.Rdata

# Types that have no standard wire format, or that only one provider understands.
PROVIDER_ONLY_TYPES = frozenset({"ALIAS", "URLFWD"})

_IN = dns.rdataclass.IN


def _quote(text: Any) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fields(value: Any, *names: str) -> list[Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"value must be a mapping with {', '.join(names)}, not {value!r}")
    missing = [n for n in names if value.get(n) is None]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    return [value[n] for n in names]


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f'invalid {name} "{value}"')
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: YAML's .inf
        raise ValueError(f'invalid {name} "{value}"') from None


# A host name label as octoDNS's FQDN check takes it: letters, digits, hyphens and underscores,
# 1 to 63 of them, no hyphen at either end.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
# Types whose target may be the root, ".", meaning "no service" (RFC 7505, 2782, 9460).
_ROOT_TARGET_TYPES = frozenset({"HTTPS", "MX", "SRV", "SVCB"})
SEMICOLON_UNESCAPED = re.compile(r"\w;")
SEMICOLON_DOUBLE_ESCAPED = re.compile(r"\\\\;")


def idna_encode(name: str) -> str:
    """``name`` with each non-ASCII label in its IDNA (``xn--``) form, lower-cased, as octoDNS."""
    try:
        return ".".join(
            label if label.isascii() else idna.encode(label).decode("ascii")
            for label in name.lower().split(".")
        )
    except idna.IDNAError as exc:
        raise ValueError(f'invalid name "{name}": {exc}') from None


def _is_fqdn(name: str) -> bool:
    # octoDNS's rule (the fqdn package's, underscores allowed): at least two labels, at most 253
    # characters without the final dot.
    bare = name[:-1] if name.endswith(".") else name
    labels = bare.split(".")
    return len(bare) <= 253 and len(labels) >= 2 and all(_LABEL.fullmatch(x) for x in labels)


def _target(rdtype: str, key: str = "value") -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not value:
            raise ValueError(f"missing {key}")
        if value == "." and rdtype in _ROOT_TARGET_TYPES:
            return value
        if not isinstance(value, str):
            raise ValueError(f'{rdtype} {key} "{value}" is not a valid FQDN')
        if "{" in value and "}" in value:
            # octoDNS leaves {placeholders} to its processors; served as written they are no name.
            raise ValueError(f'{rdtype} {key} "{value}" has a template placeholder')
        encoded = idna_encode(value)
        if not _is_fqdn(encoded):
            raise ValueError(f'{rdtype} {key} "{encoded}" is not a valid FQDN')
        if not encoded.endswith("."):
            raise ValueError(f'{rdtype} {key} "{encoded}" missing trailing .')
        return encoded

    return check


def _chunked(value: Any) -> list[bytes]:
    # octoDNS's internal TXT form: optional outer quotes, `" "` chunk joins, `\;` for `;`.
    if value is None:
        raise ValueError("missing value(s)")
    if not isinstance(value, str):
        raise ValueError(f"value must be a string, not {value!r}")
    reasons = []
    if SEMICOLON_UNESCAPED.search(value):
        reasons.append(f'unescaped ; in "{value}"')
    if SEMICOLON_DOUBLE_ESCAPED.search(value):
        reasons.append(f'double escaped ; in "{value}"')
    if not value.isascii():
        reasons.append(f'non ASCII character in "{value}"')
    if reasons:
        raise InvalidValue(reasons)
    if value.startswith('"') and value.endswith('"') and len(value) > 1:
        value = value[1:-1]
    raw = value.replace('" "', "").replace("\\;", ";")
    data = raw.encode("utf-8")
    return [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]


def _text_rdata(rdtype: str) -> Callable[[Any], Rdata]:
    def convert(value: Any) -> Rdata:
        return TXT(_IN, dns.rdatatype.from_text(rdtype), _chunked(value))

    return convert


def _from_text(rdtype: str, render: Callable[[Any], str]) -> Callable[[Any], Rdata]:
    def convert(value: Any) -> Rdata:
        return dns.rdata.from_text(_IN, rdtype, render(value))

    return convert


class InvalidValue(ValueError):
    """A value with one or more reasons, each worded as octoDNS words it where it has one."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = tuple(reasons)
        super().__init__("; ".join(reasons))


def _mapping(value: Any, rdtype: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidValue([f"{rdtype} value must be a mapping, not {value!r}"])
    return value


def _number(
    value: Mapping[str, Any], key: str, reasons: list[str], high: int, label: str | None = None
) -> int:
    """The integer field ``key`` (checked as octoDNS does, then against its wire size)."""
    label = label or key
    if key not in value:
        reasons.append(f"missing {label}")
        return 0
    raw = value[key]
    if isinstance(raw, bool):  # YAML's true/yes: octoDNS would take it as 1
        reasons.append(f'invalid {label} "{raw}"')
        return 0
    try:
        number = int(raw)
    except (TypeError, ValueError, OverflowError):  # OverflowError: YAML's .inf
        reasons.append(f'invalid {label} "{raw}"')
        return 0
    if not 0 <= number <= high:
        reasons.append(f'{label} "{number}" out of range 0-{high}')
    return number


def _defaulted(value: Mapping[str, Any], key: str, reasons: list[str], high: int) -> int:
    """An integer field octoDNS reads as 0 when absent, within 0..high."""
    raw = value.get(key, 0)
    try:
        if isinstance(raw, bool):
            raise ValueError(raw)
        number = int(raw)
    except (TypeError, ValueError, OverflowError):  # OverflowError: YAML's .inf
        reasons.append(f'invalid {key} "{raw}"')
        return 0
    if not 0 <= number <= high:
        reasons.append(f'invalid {key} "{number}"')
    return number


def _present(value: Mapping[str, Any], key: str, reasons: list[str]) -> Any:
    """Field ``key``, which octoDNS requires to be present, and we also to be set (not null)."""
    if value.get(key) is None:
        reasons.append(f"missing {key}")
    return value.get(key)


def _text(value: Mapping[str, Any], key: str, reasons: list[str]) -> Any:
    """A text field: present, set, and a string (YAML reads 12 or true as something else)."""
    text = _present(value, key, reasons)
    if text is not None and not isinstance(text, str):
        reasons.append(f'invalid {key} "{text}": not text')
    return text


def _hex(value: Any, key: str, reasons: list[str]) -> str:
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if not re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", text):
        reasons.append(f'invalid {key} "{value}": not hexadecimal octets')
    return text


def _done(reasons: list[str], text: str) -> str:
    if reasons:
        raise InvalidValue(reasons)
    return text


def _address(version: int) -> Callable[[Any], str]:
    def render(value: Any) -> str:
        if value is None:
            raise InvalidValue(["missing value(s)"])
        if value == "":
            raise InvalidValue(["empty value"])
        try:
            address = ipaddress.ip_address(str(value))
        except ValueError:
            address = None
        if address is None or address.version != version:
            raise InvalidValue([f'invalid IPv{version} address "{value}"'])
        return str(address)

    return render


def _mx(value: Any) -> str:
    value = _mapping(value, "MX")
    reasons: list[str] = []
    key = "preference" if "preference" in value else "priority"
    preference = _number(value, key, reasons, 0xFFFF, "preference")
    exchange = value.get("exchange") or value.get("value")
    if "exchange" not in value and "value" not in value:
        reasons.append("missing exchange")
    else:
        exchange = _collect(_target("MX", "exchange"), exchange, reasons)
    return _done(reasons, f"{preference} {exchange}")


def _collect(check: Callable[[Any], str], value: Any, reasons: list[str]) -> str:
    try:
        return check(value)
    except ValueError as exc:
        reasons.extend(getattr(exc, "reasons", None) or [str(exc)])
        return ""


def _srv(value: Any) -> str:
    value = _mapping(value, "SRV")
    reasons: list[str] = []
    numbers = [_number(value, k, reasons, 0xFFFF) for k in ("priority", "weight", "port")]
    target = _collect(_target("SRV", "target"), value.get("target"), reasons)
    return _done(reasons, f"{numbers[0]} {numbers[1]} {numbers[2]} {target}")


_CAA_TAG = re.compile(r"[A-Za-z0-9]{1,255}")


def _caa(value: Any) -> str:
    value = _mapping(value, "CAA")
    reasons: list[str] = []
    flags = _defaulted(value, "flags", reasons, 0xFF)
    tag = _text(value, "tag", reasons)
    if isinstance(tag, str) and not _CAA_TAG.fullmatch(tag):
        reasons.append(f'invalid tag "{tag}"')  # RFC 8659 4.1: ASCII letters and digits
    text = _text(value, "value", reasons)
    return _done(reasons, f"{flags} {tag} {_quote(text)}")


def _ds(value: Any) -> str:
    value = _mapping(value, "DS")
    reasons: list[str] = []
    if "public_key" in value or "flags" in value:  # octoDNS's deprecated field names
        key_tag = _number(value, "flags", reasons, 0xFFFF)
        algorithm = _number(value, "protocol", reasons, 0xFF)
        digest_type = _number(value, "algorithm", reasons, 0xFF)
        digest = _present(value, "public_key", reasons)
    else:
        key_tag = _number(value, "key_tag", reasons, 0xFFFF)
        algorithm = _number(value, "algorithm", reasons, 0xFF)
        digest_type = _number(value, "digest_type", reasons, 0xFF)
        digest = _present(value, "digest", reasons)
    if digest is not None:
        digest = _hex(digest, "digest", reasons)
        _digest_length(digest, "digest", "digest_type", digest_type, DS_DIGEST_LENGTHS, reasons)
    if digest_type == 0 and not reasons:
        reasons.append('digest_type "0" is reserved')  # RFC 4034 5.1.3
    return _done(reasons, f"{key_tag} {algorithm} {digest_type} {digest}")


# Hex digits of a digest, by type: DS (SHA-1, SHA-256, GOST, SHA-384), TLSA (SHA-256, SHA-512).
DS_DIGEST_LENGTHS = {1: 40, 2: 64, 3: 64, 4: 96}
TLSA_DIGEST_LENGTHS = {1: 64, 2: 128}


def _digest_length(
    data: str, key: str, type_key: str, kind: int, lengths: dict[int, int], reasons: list[str]
) -> None:
    expected = lengths.get(kind)
    if expected and data and len(data) != expected:
        reasons.append(
            f"{key} length {len(data)} does not match {type_key} {kind} (expected {expected})"
        )


NAPTR_FLAGS = ("S", "A", "U", "P", "s", "a", "u", "p")  # octoDNS's list


def _naptr(value: Any) -> str:
    value = _mapping(value, "NAPTR")
    reasons: list[str] = []
    order = _number(value, "order", reasons, 0xFFFF)
    preference = _number(value, "preference", reasons, 0xFFFF)
    if "flags" not in value:
        reasons.append("missing flags")
    elif value["flags"] not in NAPTR_FLAGS:
        reasons.append(f'unrecognized flags "{value["flags"]}"')
    service = _text(value, "service", reasons)
    regexp = _text(value, "regexp", reasons)
    replacement = _present(value, "replacement", reasons)
    if replacement is not None:
        replacement = _collect(_absolute_name("NAPTR replacement"), replacement, reasons)
    return _done(
        reasons,
        f"{order} {preference} {_quote(value.get('flags'))} {_quote(service)} {_quote(regexp)} "
        f"{replacement}",
    )


def _absolute_name(what: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        try:
            name = dns.name.from_text(value) if isinstance(value, str) else None
        except dns.exception.DNSException:
            name = None
        bad = name is None or not value.endswith(".") or value.startswith(".")
        if bad or any(c.isspace() for c in value):
            if value != ".":
                raise ValueError(f'{what} "{value}" is not an absolute domain name')
        return str(value)

    return check


SSHFP_ALGORITHMS = (1, 2, 3, 4)  # octoDNS's lists, with its expected fingerprint lengths
SSHFP_FINGERPRINT_LENGTHS = {1: 40, 2: 64}


def _sshfp(value: Any) -> str:
    value = _mapping(value, "SSHFP")
    reasons: list[str] = []
    before = len(reasons)
    algorithm = _number(value, "algorithm", reasons, 0xFF)
    if len(reasons) == before and algorithm not in SSHFP_ALGORITHMS:
        reasons.append(f'unrecognized algorithm "{algorithm}"')
    before = len(reasons)
    fp_type: int | None = _number(value, "fingerprint_type", reasons, 0xFF)
    if len(reasons) != before:
        fp_type = None
    elif fp_type not in SSHFP_FINGERPRINT_LENGTHS:
        reasons.append(f'unrecognized fingerprint_type "{fp_type}"')
    fingerprint = value.get("fingerprint")
    if "fingerprint" not in value:
        reasons.append("missing fingerprint")
    elif not isinstance(fingerprint, str):
        reasons.append(f'invalid fingerprint "{fingerprint}"')
    else:
        expected = SSHFP_FINGERPRINT_LENGTHS.get(fp_type or 0)
        if expected and len(fingerprint) != expected:
            reasons.append(
                f"fingerprint length {len(fingerprint)} does not match fingerprint_type "
                f"{fp_type} (expected {expected})"
            )
        else:
            _hex(fingerprint, "fingerprint", reasons)
    return _done(reasons, f"{algorithm} {fp_type} {fingerprint}")


def _tlsa(value: Any) -> str:
    value = _mapping(value, "TLSA")
    reasons: list[str] = []
    fields = [
        _defaulted(value, key, reasons, high)
        for key, high in (("certificate_usage", 3), ("selector", 1), ("matching_type", 2))
    ]
    for key in ("certificate_usage", "selector", "matching_type"):
        if key not in value:
            reasons.append(f"missing {key}")
    data = _present(value, "certificate_association_data", reasons)
    if data is not None:
        data = _hex(data, "certificate_association_data", reasons)
        _digest_length(
            data,
            "certificate_association_data",
            "matching_type",
            fields[2],
            TLSA_DIGEST_LENGTHS,
            reasons,
        )
    return _done(reasons, f"{fields[0]} {fields[1]} {fields[2]} {data}")


_LOC_INTS = {"lat_degrees": 90, "lat_minutes": 59, "long_degrees": 180, "long_minutes": 59}
_LOC_FLOATS = {
    "lat_seconds": (0.0, 59.999),
    "long_seconds": (0.0, 59.999),
    "altitude": (-100000.0, 42849672.95),
    "size": (0.0, 90000000.0),
    "precision_horz": (0.0, 90000000.0),
    "precision_vert": (0.0, 90000000.0),
}
_LOC_DIRECTIONS = {"lat_direction": ("N", "S"), "long_direction": ("E", "W")}


def _loc(value: Any) -> str:
    value = _mapping(value, "LOC")
    reasons: list[str] = []
    got: dict[str, Any] = {}
    for key, high in _LOC_INTS.items():
        got[key] = _ranged(value, key, reasons, int, 0, high)
    for key, (low, top) in _LOC_FLOATS.items():
        got[key] = _ranged(value, key, reasons, float, low, top)
    for key, allowed in _LOC_DIRECTIONS.items():
        if key not in value:
            reasons.append(f"missing {key}")
        elif value[key] not in allowed:
            reasons.append(f'invalid direction for {key} "{value[key]}"')
    return _done(
        reasons,
        f"{got['lat_degrees']} {got['lat_minutes']} {got['lat_seconds']} "
        f"{value.get('lat_direction')} {got['long_degrees']} {got['long_minutes']} "
        f"{got['long_seconds']} {value.get('long_direction')} {got['altitude']}m {got['size']}m "
        f"{got['precision_horz']}m {got['precision_vert']}m",
    )


def _ranged(
    value: Mapping[str, Any],
    key: str,
    reasons: list[str],
    kind: type[int] | type[float],
    low: float,
    high: float,
) -> Any:
    if key not in value:
        reasons.append(f"missing {key}")
        return 0
    raw = value[key]
    try:
        if isinstance(raw, bool):
            raise ValueError(raw)
        number = kind(raw)
    except (TypeError, ValueError):
        reasons.append(f'invalid {key} "{raw}"')
        return 0
    if not low <= number <= high:
        reasons.append(f'invalid value for {key} "{raw}"')
    return number


def _uri(value: Any) -> str:
    value = _mapping(value, "URI")
    reasons: list[str] = []
    priority = _number(value, "priority", reasons, 0xFFFF)
    weight = _number(value, "weight", reasons, 0xFFFF)
    target = value.get("target")
    if not target:
        reasons.append("missing target")
    elif not isinstance(target, str):
        reasons.append(f'invalid target "{target}"')
    return _done(reasons, f"{priority} {weight} {_quote(target)}")


# RFC 9460 keys octoDNS knows, and whether they take a value.
SVCB_PARAMS = {
    "mandatory": True,
    "alpn": True,
    "no-default-alpn": False,
    "port": True,
    "ipv4hint": True,
    "ech": True,
    "ipv6hint": True,
}


def _svcb_param(key: str, param: Any, reasons: list[str]) -> str:
    if key.startswith("key"):
        try:
            number = int(key[3:])
        except ValueError:
            reasons.append(f'SvcParam key "{key}" has wrong format')
            return ""
        if number > 65535:
            reasons.append(f'SvcParam key "{key}" has wrong key number')
        return f"{key}={_quote(param)}" if param not in (None, "") else key
    if key not in SVCB_PARAMS:
        reasons.append(f"Unknown SvcParam {key}")
        return ""
    if not SVCB_PARAMS[key]:
        if param is not None:
            reasons.append(f"SvcParam {key} has value when it should not")
        return key
    if key in ("alpn", "ipv4hint", "ipv6hint", "mandatory"):
        if not isinstance(param, list):
            reasons.append(f"{key} is not a list")
            return ""
        for item in param:
            _svcb_list_item(key, item, reasons)
        return f"{key}={_quote(','.join(str(p) for p in param))}"
    if key == "port":
        try:
            port = int(param)
        except (TypeError, ValueError, OverflowError):  # OverflowError: YAML's .inf
            reasons.append("port is not a number")
        else:
            if not 0 <= port <= 0xFFFF:
                reasons.append(f"port {port} is not a valid number")
        return f"{key}={_quote(param)}"
    try:  # ech
        base64.b64decode(param, validate=True)
    except (binascii.Error, TypeError, ValueError):
        reasons.append("ech SvcParam is invalid Base64")
    return f"{key}={_quote(param)}"


def _svcb_list_item(key: str, item: Any, reasons: list[str]) -> None:
    if key == "alpn":
        try:
            _chunked(item)
        except ValueError as exc:
            reasons.append(str(exc))
    elif key in ("ipv4hint", "ipv6hint"):
        version = 4 if key == "ipv4hint" else 6
        try:
            ok = ipaddress.ip_address(str(item)).version == version
        except ValueError:
            ok = False
        if not ok:
            reasons.append(f'{key} "{item}" is not a valid IPv{version} address')
    elif not isinstance(item, str) or (item not in SVCB_PARAMS and not item.startswith("key")):
        reasons.append(f'unsupported SvcParam "{item}" in mandatory')
    elif item.startswith("key"):
        _svcb_param(item, None, reasons)


def _svcb_consistency(params: Mapping[Any, Any], reasons: list[str]) -> None:
    # RFC 9460 8: keys named mandatory must be set; no-default-alpn needs an alpn to fall back on.
    if reasons:
        return
    mandatory = params.get("mandatory") or []
    for key in mandatory:
        if key not in params:
            reasons.append(f'mandatory SvcParam "{key}" is not set')
    if "no-default-alpn" in params and "alpn" not in params:
        reasons.append("SvcParam no-default-alpn needs alpn")


def _svcb(rdtype: str) -> Callable[[Any], str]:
    def render(value: Any) -> str:
        value = _mapping(value, rdtype)
        reasons: list[str] = []
        if "svcpriority" not in value:
            reasons.append("missing svcpriority")
            priority = -1
        else:
            before = len(reasons)
            priority = _number(value, "svcpriority", reasons, 0xFFFF)
            if len(reasons) != before:
                reasons[-1] = f'invalid priority "{value["svcpriority"]}"'
                priority = -1
        target = _collect(_target(rdtype, "targetname"), value.get("targetname"), reasons)
        parts = [str(priority), target]
        if "svcparams" in value:
            params = value["svcparams"]
            if not isinstance(params, Mapping):
                reasons.append("svcparams must be a mapping")
                params = {}
            if priority == 0 and params:
                reasons.append("svcparams set on AliasMode SVCB record")
            for key, param in params.items():
                parts.append(_svcb_param(str(key), param, reasons))
            _svcb_consistency(params, reasons)
        return _done(reasons, " ".join(p for p in parts if p))

    return render


def _openpgpkey(value: Any) -> str:
    if not value:
        raise InvalidValue(["missing value(s)"])
    try:
        ok = isinstance(value, str) and bool(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise InvalidValue([f'invalid value "{value}": not base64'])
    return value


def _name_value(rdtype: str) -> Callable[[Any], str]:
    return _target(rdtype)


def _address_rdata(version: int) -> Callable[[Any], Rdata]:
    # Most records of a large zone are addresses: build them directly, without the tokenizer
    # that dns.rdata.from_text runs (a third of loading a 100k-record zone).
    render = _address(version)
    kind: Any = A if version == 4 else AAAA
    rdtype = dns.rdatatype.A if version == 4 else dns.rdatatype.AAAA

    def convert(value: Any) -> Rdata:
        return kind(_IN, rdtype, render(value))

    return convert


CONVERTERS: dict[str, Callable[[Any], Rdata]] = {
    "A": _address_rdata(4),
    "AAAA": _address_rdata(6),
    "CAA": _from_text("CAA", _caa),
    "CNAME": _from_text("CNAME", _name_value("CNAME")),
    "DNAME": _from_text("DNAME", _name_value("DNAME")),
    "DS": _from_text("DS", _ds),
    "HTTPS": _from_text("HTTPS", _svcb("HTTPS")),
    "LOC": _from_text("LOC", _loc),
    "MX": _from_text("MX", _mx),
    "NAPTR": _from_text("NAPTR", _naptr),
    "NS": _from_text("NS", _name_value("NS")),
    "OPENPGPKEY": _from_text("OPENPGPKEY", _openpgpkey),
    "PTR": _from_text("PTR", _name_value("PTR")),
    "SPF": _text_rdata("SPF"),
    "SRV": _from_text("SRV", _srv),
    "SSHFP": _from_text("SSHFP", _sshfp),
    "SVCB": _from_text("SVCB", _svcb("SVCB")),
    "TLSA": _from_text("TLSA", _tlsa),
    "TXT": _text_rdata("TXT"),
    "URI": _from_text("URI", _uri),
}

# Types octoDNS reads from `value` alone (a `values` list is not theirs).
SINGLE_VALUE_TYPES = frozenset({"CNAME", "DNAME"})


def to_rdata(rdtype: str, value: Any) -> Rdata:
    """Convert one octoDNS value of ``rdtype``; raises ValueError with a readable reason.

    A rejected value raises InvalidValue, whose ``reasons`` use octoDNS's wording where octoDNS
    rejects it too; what only the wire format refuses gets dnspython's reason.
    """
    try:
        rdata = CONVERTERS[rdtype](value)
        # Some fields (LOC's altitude, say) are range-checked only when packed: pack it now, so
        # that a value that cannot be served is a reason here and not a crash later.
        rdata.to_wire()
        return rdata
    except InvalidValue:
        raise
    except (
        dns.exception.DNSException, ValueError, TypeError, KeyError, OverflowError, struct.error
    ) as exc:
        if isinstance(exc, ValueError) and not isinstance(exc, dns.exception.DNSException):
            raise InvalidValue([str(exc)]) from None
        reason = str(exc) or type(exc).__name__
        raise InvalidValue([f"invalid {rdtype} value {value!r}: {reason}"]) from None


# A name as octoDNS's checks leave it unchanged (lower-case ASCII host labels, two or more, the
# final dot): its wire form needs neither IDNA, nor the checks' error paths, nor dnspython.
_PLAIN_FQDN = re.compile(r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.){2,}")
_FQDN_MAX = 254  # 253 characters and the final dot: a wire name of at most 255 octets


def _plain_name(value: Any) -> bytes | None:
    if type(value) is not str or len(value) > _FQDN_MAX or not _PLAIN_FQDN.fullmatch(value):
        return None
    return b"".join(bytes((len(label),)) + label for label in value.encode().split(b"."))


def _plain_address(family: int) -> Callable[[Any], bytes | None]:
    def wire(value: Any) -> bytes | None:
        if type(value) is not str:
            return None
        try:
            packed = socket.inet_pton(family, value)
        except OSError:
            return None
        # Only the canonical text: then ipaddress's reading is the same address.
        return packed if socket.inet_ntop(family, packed) == value else None

    return wire


def _plain_text(value: Any) -> bytes | None:
    if type(value) is not str or not value.isascii() or ";" in value:
        return None
    return b"".join(bytes((len(chunk),)) + chunk for chunk in _chunked(value))


def _plain_mx(value: Any) -> bytes | None:
    if not isinstance(value, Mapping) or len(value) != 2:
        return None
    preference, exchange = value.get("preference"), _plain_name(value.get("exchange"))
    if type(preference) is not int or not 0 <= preference <= 0xFFFF or exchange is None:
        return None
    return struct.pack("!H", preference) + exchange


# The common values, straight to wire form; None sends a value through to_rdata.
_PLAIN: dict[str, Callable[[Any], bytes | None]] = {
    "A": _plain_address(socket.AF_INET),
    "AAAA": _plain_address(socket.AF_INET6),
    "CNAME": _plain_name,
    "DNAME": _plain_name,
    "NS": _plain_name,
    "PTR": _plain_name,
    "MX": _plain_mx,
    "TXT": _plain_text,
    "SPF": _plain_text,
}


def to_wire(rdtype: str, value: Any) -> tuple[bytes, bytes]:
    """One octoDNS value of ``rdtype`` as RDATA: its wire form, and its DNSSEC canonical form
    (RFC 4034 6.2: what tells two values apart). Raises ValueError as to_rdata does."""
    plain = _PLAIN.get(rdtype)
    if plain is not None:
        wire = plain(value)
        if wire is not None:
            return wire, wire
    rdata = to_rdata(rdtype, value)
    return _packed(rdata.to_wire()), rdata.to_digestable()


def _packed(wire: bytes | None) -> bytes:
    assert wire is not None
    return wire
