"""octoDNS record values to dnspython rdata: one converter per type, errors as reasons."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
from dns.rdtypes.ANY.TXT import TXT

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
    except (TypeError, ValueError):
        raise ValueError(f'invalid {name} "{value}"') from None


def _fqdn(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"missing value, or not a name: {value!r}")
    if not value.endswith("."):
        raise ValueError(f'missing trailing . in "{value}"')
    return value


def _chunked(value: Any) -> list[bytes]:
    # octoDNS's internal TXT form: optional outer quotes, `" "` chunk joins, `\;` for `;`.
    if not isinstance(value, str):
        raise ValueError(f"value must be a string, not {value!r}")
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


def _address(version: int) -> Callable[[Any], str]:
    def render(value: Any) -> str:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            address = None
        if address is None or address.version != version:
            raise ValueError(f'invalid IPv{version} address "{value}"')
        return str(address)

    return render


def _mx(value: Any) -> str:
    if isinstance(value, Mapping) and "exchange" not in value and "value" in value:
        value = {"preference": value.get("priority"), "exchange": value.get("value")}
    preference, exchange = _fields(value, "preference", "exchange")
    return f"{_int(preference, 'preference')} {_fqdn(exchange)}"


def _srv(value: Any) -> str:
    priority, weight, port, target = _fields(value, "priority", "weight", "port", "target")
    numbers = " ".join(
        str(_int(v, n)) for v, n in ((priority, "priority"), (weight, "weight"), (port, "port"))
    )
    return f"{numbers} {_fqdn(target)}"


def _caa(value: Any) -> str:
    tag, text = _fields(value, "tag", "value")
    return f"{_int(value.get('flags', 0), 'flags')} {tag} {_quote(text)}"


def _ds(value: Any) -> str:
    if isinstance(value, Mapping) and "public_key" in value:  # octoDNS's deprecated field names
        value = {
            "key_tag": value.get("flags"),
            "algorithm": value.get("protocol"),
            "digest_type": value.get("algorithm"),
            "digest": value.get("public_key"),
        }
    key_tag, algorithm, digest_type, digest = _fields(
        value, "key_tag", "algorithm", "digest_type", "digest"
    )
    tag, alg, dtype = (
        _int(key_tag, "key_tag"),
        _int(algorithm, "algorithm"),
        _int(digest_type, "digest_type"),
    )
    return f"{tag} {alg} {dtype} {digest}"


def _naptr(value: Any) -> str:
    order, pref, flags, service, regexp, repl = _fields(
        value, "order", "preference", "flags", "service", "regexp", "replacement"
    )
    return (
        f"{_int(order, 'order')} {_int(pref, 'preference')} "
        f"{_quote(flags)} {_quote(service)} {_quote(regexp)} {_fqdn(repl)}"
    )


def _sshfp(value: Any) -> str:
    algorithm, fp_type, fingerprint = _fields(value, "algorithm", "fingerprint_type", "fingerprint")
    return f"{_int(algorithm, 'algorithm')} {_int(fp_type, 'fp_type')} {fingerprint}"


def _tlsa(value: Any) -> str:
    usage, selector, matching, data = _fields(
        value, "certificate_usage", "selector", "matching_type", "certificate_association_data"
    )
    return (
        f"{_int(usage, 'usage')} {_int(selector, 'selector')} {_int(matching, 'matching')} {data}"
    )


def _loc(value: Any) -> str:
    (lat_d, lat_m, lat_s, lat_dir, lon_d, lon_m, lon_s, lon_dir, alt, size, ph, pv) = _fields(
        value,
        "lat_degrees",
        "lat_minutes",
        "lat_seconds",
        "lat_direction",
        "long_degrees",
        "long_minutes",
        "long_seconds",
        "long_direction",
        "altitude",
        "size",
        "precision_horz",
        "precision_vert",
    )
    return (
        f"{_int(lat_d, 'lat_d')} {_int(lat_m, 'lat_m')} {float(lat_s)} {lat_dir} "
        f"{_int(lon_d, 'lon_d')} {_int(lon_m, 'lon_m')} {float(lon_s)} {lon_dir} "
        f"{float(alt)}m {float(size)}m {float(ph)}m {float(pv)}m"
    )


def _uri(value: Any) -> str:
    priority, weight, target = _fields(value, "priority", "weight", "target")
    return f"{_int(priority, 'priority')} {_int(weight, 'weight')} {_quote(target)}"


def _svcb(value: Any) -> str:
    priority, target = _fields(value, "svcpriority", "targetname")
    parts = [str(_int(priority, "priority")), _fqdn(target)]
    params = value.get("svcparams") or {}
    if not isinstance(params, Mapping):
        raise ValueError("svcparams must be a mapping")
    for key, param in params.items():
        if param is None or param == "":
            parts.append(str(key))
        elif isinstance(param, list):
            parts.append(f"{key}={_quote(','.join(str(p) for p in param))}")
        else:
            parts.append(f"{key}={_quote(param)}")
    return " ".join(parts)


def _openpgpkey(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"value must be a base64 string, not {value!r}")
    return value


CONVERTERS: dict[str, Callable[[Any], Rdata]] = {
    "A": _from_text("A", _address(4)),
    "AAAA": _from_text("AAAA", _address(6)),
    "CAA": _from_text("CAA", _caa),
    "CNAME": _from_text("CNAME", _fqdn),
    "DNAME": _from_text("DNAME", _fqdn),
    "DS": _from_text("DS", _ds),
    "HTTPS": _from_text("HTTPS", _svcb),
    "LOC": _from_text("LOC", _loc),
    "MX": _from_text("MX", _mx),
    "NAPTR": _from_text("NAPTR", _naptr),
    "NS": _from_text("NS", _fqdn),
    "OPENPGPKEY": _from_text("OPENPGPKEY", _openpgpkey),
    "PTR": _from_text("PTR", _fqdn),
    "SPF": _text_rdata("SPF"),
    "SRV": _from_text("SRV", _srv),
    "SSHFP": _from_text("SSHFP", _sshfp),
    "SVCB": _from_text("SVCB", _svcb),
    "TLSA": _from_text("TLSA", _tlsa),
    "TXT": _text_rdata("TXT"),
    "URI": _from_text("URI", _uri),
}

# Types octoDNS allows only one value for.
SINGLE_VALUE_TYPES = frozenset({"CNAME", "DNAME"})


def to_rdata(rdtype: str, value: Any) -> Rdata:
    """Convert one octoDNS value of ``rdtype``; raises ValueError with a readable reason."""
    try:
        return CONVERTERS[rdtype](value)
    except (dns.exception.DNSException, ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, ValueError) and not isinstance(exc, dns.exception.DNSException):
            raise ValueError(str(exc)) from None
        reason = str(exc) or type(exc).__name__
        raise ValueError(f"invalid {rdtype} value {value!r}: {reason}") from None
