"""ExaBGP 5 configuration and environment for one POP, rendered from pop.yaml."""

from __future__ import annotations

import ipaddress
import shlex
import sys
from pathlib import Path

from anycastedge.config.pop import PopConfig

PROCESS = "anycastedge-hook"

# ExaBGP reads its settings from the environment; these make it run in the foreground under a
# supervisor, log to stdout, keep the helper's privileges, and not share named pipes with other
# ExaBGP instances on the host.
ENVIRONMENT = {
    "exabgp_daemon_daemonize": "false",
    "exabgp_daemon_user": "root",
    "exabgp_daemon_drop": "false",
    "exabgp_log_destination": "stdout",
    "exabgp_api_cli": "false",
    "exabgp_api_ack": "true",
}


def hook_command(config_path: Path, python: str | None = None) -> str:
    """The command ExaBGP runs as its API process."""
    args = [python or sys.executable, "-m", "anycastedge", "bgp", "hook", "-c", str(config_path)]
    return " ".join(shlex.quote(a) for a in args)


def render_config(config: PopConfig, python: str | None = None) -> str:
    """The ExaBGP configuration file."""
    if config.source is None:
        raise ValueError("rendering needs a pop.yaml file (the hook is started with -c)")
    bgp = config.bgp
    families = {ipaddress.ip_network(p).version for p in config.anycast} or {4}
    lines = [
        f"# Rendered by `anycastedge bgp render` from {config.source}; do not edit.",
        f"process {PROCESS} {{",
        f"    run {hook_command(config.source, python)};",
        "    encoder text;",
        "}",
        "",
    ]
    for n in bgp.neighbors:
        lines += [
            f"neighbor {n.address} {{",
            f"    router-id {bgp.router_id};",
            f"    local-address {bgp.local_address};",
            f"    local-as {bgp.local_as};",
            f"    peer-as {n.peer_as};",
            f"    hold-time {bgp.hold_time};",
        ]
        if n.port != 179:
            lines.append(f"    connect {n.port};")
        lines.append("    family {")
        lines += [f"        ipv{v} unicast;" for v in sorted(families)]
        lines += [
            "    }",
            "    api {",
            f"        processes [ {PROCESS} ];",
            "    }",
            "}",
            "",
        ]
    return "\n".join(lines)


def render_environment() -> str:
    """The environment file: KEY=VALUE lines (systemd EnvironmentFile, or `env $(cat ...)`)."""
    return "".join(f"{key}={value}\n" for key, value in ENVIRONMENT.items())
