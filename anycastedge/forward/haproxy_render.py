"""pop.yaml's ``forward:`` as an HAProxy 2.6 configuration (``forward.engine: haproxy``). Pure.

One function per section; ``unsupported`` lists what HAProxy cannot do as the built-in engine
does, which config validation refuses rather than approximates.
"""

from __future__ import annotations

from anycastedge.forward.model import ForwardConfig

KeyPath = tuple[str | int, ...]  # below forward:, an int being a list index


def unsupported(config: ForwardConfig) -> list[tuple[KeyPath, str]]:
    """What ``config`` asks that HAProxy 2.6 cannot express: (key path, why) each."""
    out: list[tuple[KeyPath, str]] = []
    for listener in config.listeners:
        if listener.protocol == "udp":
            out.append(
                (("listeners", listener.name, "protocol"),
                 "udp listeners need engine: builtin (HAProxy 2.6 forwards no UDP)")
            )  # fmt: skip
    for backend in config.backends:
        if backend.balance == "least_time":
            out.append(
                (("backends", backend.name, "balance"),
                 "least_time needs engine: builtin (HAProxy 2.6 has no connect-time balancing)")
            )  # fmt: skip
    return out
