"""ExaBGP 5 configuration and environment for one POP, rendered from pop.yaml."""

from __future__ import annotations

import ipaddress
import shlex
import sys
from pathlib import Path

from anycastedge.config.pop import PopConfig
from anycastedge.errors import ConfigError, Location, Problem

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


ENTRY_POINT = "anycastedge"  # the console script; --portable leaves finding it to ExaBGP
CONFIG_ENV = "ANYCASTEDGE_CONFIG"  # read by every command given no -c, the hook included


def hook_command(config_path: Path | str | None, python: str | None = None) -> str:
    """The command ExaBGP runs as its API process.

    With a ``config_path``: this very Python (``-m anycastedge``) and that path, which should be
    absolute: ExaBGP changes its working directory to / before it starts the hook. Without one
    (portable): the ``anycastedge`` entry point, which ExaBGP looks up on its PATH when it loads
    the config, and no -c, so the hook reads the pop.yaml named by $ANYCASTEDGE_CONFIG, which
    ExaBGP passes on to it with the rest of its environment.
    """
    args = [ENTRY_POINT] if config_path is None else [python or sys.executable, "-m", "anycastedge"]
    args += ["bgp", "hook"]
    if config_path is not None:
        args += ["-c", str(config_path)]
    return " ".join(shlex.quote(a) for a in args)


def render_config(
    config: PopConfig,
    python: str | None = None,
    *,
    portable_from: Path | str | None = None,
) -> str:
    """The ExaBGP configuration file.

    With ``portable_from`` (the pop.yaml path as the operator typed it, named only in a comment)
    the file names no path of the machine it was rendered on: see ``hook_command``.

    Raises ConfigError when there is nothing to render: a config without neighbors would run the
    hook and never announce anything, a mistake worth a loud failure.
    """
    if config.source is None:
        raise ValueError("rendering needs a pop.yaml file (the hook is started with -c)")
    if not config.bgp.neighbors:
        raise ConfigError(
            [
                Problem(
                    "bgp.neighbors: no BGP neighbors to render a session for "
                    "(add at least one {address, peer_as, port} under bgp:)",
                    Location(str(portable_from or config.source)),
                )
            ]
        )
    if portable_from is None:
        header = [f"# Rendered by `anycastedge bgp render` from {config.source}; do not edit."]
        run = hook_command(config.source, python)
    else:
        header = [
            f"# Rendered by `anycastedge bgp render --portable` from {portable_from}; do not edit.",
            "# Start ExaBGP with `anycastedge` on its PATH and with",
            f"# {CONFIG_ENV}=<absolute path of {portable_from}> in its environment.",
        ]
        run = hook_command(None)
    bgp = config.bgp
    families = {ipaddress.ip_network(p).version for p in config.anycast} or {4}
    lines = [
        *header,
        f"process {PROCESS} {{",
        f"    run {run};",
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
