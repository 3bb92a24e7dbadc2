"""HAProxy 2.6 accepts what ``forward render`` makes (haproxy -c) for every documented shape."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from anycastedge.config.pop import load_pop
from anycastedge.errors import ConfigError
from anycastedge.forward.haproxy_files import check_config, write_rendered
from anycastedge.forward.haproxy_render import Runtime, render, unsupported
from tests.support.certs import make_ca, make_cert

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
HAPROXY = shutil.which("haproxy")
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="needs haproxy (make test installs it)")
HEAD = "pop: t1\ndns:\n  listen: ['127.0.0.1:5300']\n"


def haproxy_pop(text: str) -> str:
    """``text`` with ``forward.engine: haproxy``."""
    return re.sub(r"(?m)^forward:\n", "forward:\n  engine: haproxy\n", text, count=1)


def checked(pop: Path, tmp_path: Path) -> str:
    """Render pop.yaml into a runtime directory and have haproxy -c check it; the config."""
    config = load_pop(pop).forward
    runtime = Runtime(str(tmp_path / "rt"))
    assert unsupported(config) == []
    rendered = render(config, runtime)
    assert write_rendered(rendered, runtime) is True
    assert write_rendered(rendered, runtime) is False  # same content: nothing changed
    assert HAPROXY is not None
    ok, output = check_config(HAPROXY, runtime.config_path)
    assert ok, f"{output}\n{rendered.config}"
    return rendered.config


def doc_blocks() -> list[tuple[str, str]]:
    """Every YAML block of the docs that has a forward: section: (where, text)."""
    out = []
    for name in ("forwarding.md", "configuration.md"):
        text = (ROOT / "docs" / name).read_text()
        for match in re.finditer(r"```ya?ml\n(.*?)```", text, re.S):
            if re.search(r"(?m)^forward:", match.group(1)):
                line = text[: match.start()].count("\n") + 1
                out.append((f"{name}:{line}", match.group(1)))
    return out


def doc_certificates(directory: Path) -> None:
    """The files the docs' examples name (tls/...), made by a throwaway CA."""
    tls = directory / "tls"
    ca = make_ca(tls)
    shutil.copy(ca.cert, tls / "internal-ca.pem")
    for stem, names in (("example.com", ["example.com"]),
                        ("example.org", ["example.org", "*.example.org"])):  # fmt: skip
        make_cert(ca, tls, stem, names)  # tls/STEM.pem and tls/STEM.key, as the docs name


@pytest.mark.parametrize("where", [w for w, _ in doc_blocks()])
def test_docs_examples(where: str, tmp_path: Path) -> None:
    """Each documented forward: renders to a config HAProxy accepts, or is refused naming the
    keys HAProxy cannot do (UDP, least_time)."""
    block = dict(doc_blocks())[where]
    doc_certificates(tmp_path)
    pop = tmp_path / "pop.yaml"
    pop.write_text(HEAD + haproxy_pop(block))
    if re.search(r"protocol: udp|least_time", block):
        with pytest.raises(ConfigError) as caught:
            load_pop(pop)
        messages = [p.message for p in caught.value.problems]
        assert messages and all("engine: builtin" in m for m in messages), messages
        assert any(re.match(r"forward\.(listeners\.\w+\.protocol|backends\.\w+\.balance):", m)
                   for m in messages), messages  # fmt: skip
        return
    checked(pop, tmp_path)


def test_docs_have_forward_examples() -> None:
    assert len(doc_blocks()) >= 3


def test_example_pop(tmp_path: Path) -> None:
    pop = tmp_path / "pop.yaml"
    pop.write_text(haproxy_pop((ROOT / "examples" / "pop.yaml").read_text()))
    if "forward:" not in pop.read_text():
        pop.write_text(pop.read_text() + "forward:\n  engine: haproxy\n")
    checked(pop, tmp_path)


def test_lab_pop(tmp_path: Path) -> None:
    pop = tmp_path / "pop1.yaml"
    pop.write_text(haproxy_pop((ROOT / "bgp" / "lab" / "pop1.yaml").read_text()))
    text = checked(pop, tmp_path)
    assert "server e1 198.18.11.2:8082 weight 1" in text


@pytest.mark.parametrize(
    "group_vars",
    sorted((ROOT / "ansible" / "inventories" / "example" / "group_vars").glob("pop_*.yml")),
    ids=lambda p: p.stem,
)
def test_ansible_example_inventory(group_vars: Path, tmp_path: Path) -> None:
    """Each example POP's anycastedge_forward (what the role writes as pop.yaml's forward:)."""
    forward = yaml.safe_load(group_vars.read_text())["anycastedge_forward"]
    pop = tmp_path / "pop.yaml"
    pop.write_text(HEAD + yaml.safe_dump({"forward": {"engine": "haproxy", **forward}}))
    text = checked(pop, tmp_path)
    assert text.count("\n    server e") == sum(
        len(b["endpoints"]) for b in forward["backends"].values()
    )


EVERYTHING = """\
state_dir: state
forward:
  engine: haproxy
  workers: 2
  haproxy: {hard_stop_after: 30.5}
  listeners:
    ssh: {bind: "127.0.0.1:2222", protocol: tcp, backend: bastion, idle_timeout: 60,
          accept_proxy: [10.0.0.0/8, "::1/128"], connect_attempts: 2}
    ssh6: {bind: "[::1]:2223", protocol: tcp, backend: bastion, idle_timeout: 60,
           connect_attempts: 2}
    web:
      bind: "127.0.0.1:8080"
      protocol: http
      accept_proxy: [10.2.0.0/16]
      trusted_upstreams: [10.1.0.0/16, "fd00::/8"]
      max_body: 1000
      access_log: "-"
      routes:
        - {host: "API.example.com:8080", path_prefix: /api/, backend: api, max_body: 10}
        - {hosts: ["*.example.org", "example.org"], backend: sticky}
        - {host: "[::1]", backend: least}
        - {path_prefix: /, backend: p2c}
    secure:
      bind: "[::1]:8443"
      protocol: https
      access_log: log/access.log
      tls:
        certificates:
          - {cert: a.pem, key: a.key}
          - {cert: b.pem, key: b.key, hosts: [b.example.com, "*.b.example.com"]}
      routes:
        - {host: "a.example.com:443", backend: tls_verify}
        - {host: "*.b.example.com", path_prefix: "/x'y/", backend: tls_noverify}
        - {backend: tls_noverify}
    strict:
      bind: "127.0.0.1:8444"
      protocol: https
      tls:
        min_version: "1.3"
        certificates: [{cert: a.pem, key: a.key}]
      routes: [{backend: tls_noverify}]
  backends:
    bastion:
      balance: maglev
      proxy_protocol: v2
      slow_start: 10
      healthcheck: {kind: tcp, interval: 1, timeout: 0.5, port: 2200}
      endpoints: [{address: "127.0.0.1:22"}, {address: "[::1]:22", weight: 0}]
    api:
      balance: weighted
      ejection: {consecutive_failures: 3, consecutive_5xx: 3}
      healthcheck: {kind: http, path: /health, host: api.example.com, expect_status: [200, 204],
                    body: "it's ok"}
      http: {max_connections: 50, pool_size: 8, pool_idle_timeout: 1.5, retries: 1,
             response_timeout: 30}
      endpoints: [{address: "127.0.0.1:9001", weight: 3}, {address: "127.0.0.1:9002"}]
    sticky:
      sticky_cookie: SRV
      proxy_protocol: v1
      endpoints: [{address: "127.0.0.1:9003"}, {address: "127.0.0.1:9004", weight: 0}]
    least:
      balance: least_conn
      ejection: {consecutive_failures: 4, consecutive_5xx: 0}
      endpoints: [{address: "[::1]:9005"}]
    p2c:
      balance: p2c
      endpoints: [{address: "127.0.0.1:9006"}]
    tls_verify:
      balance: source_hash
      http: {tls: true, ca_file: ca.pem, server_name: a.example.com}
      sticky_cookie: S2
      endpoints: [{address: "127.0.0.1:9443"}]
    tls_noverify:
      balance: round_robin
      http: {tls: true, verify: false}
      endpoints: [{address: "127.0.0.1:9444", weight: 5}]
    hook:
      critical: true
      endpoints: [{address: "127.0.0.1:53"}]
"""


def everything(tmp_path: Path) -> Path:
    ca = make_ca(tmp_path / "ca")
    for stem, names in (("a", ["a.example.com"]), ("b", ["b.example.com", "*.b.example.com"])):
        cert, key = make_cert(ca, tmp_path / "ca", stem, names)
        shutil.copy(cert, tmp_path / f"{stem}.pem")
        shutil.copy(key, tmp_path / f"{stem}.key")
    shutil.copy(ca.cert, tmp_path / "ca.pem")
    pop = tmp_path / "pop.yaml"
    pop.write_text(HEAD + EVERYTHING)
    return pop


def test_every_option_at_once(tmp_path: Path) -> None:
    text = checked(everything(tmp_path), tmp_path)
    bundle = (tmp_path / "rt" / "certs" / "secure.0.pem").read_text()
    assert "BEGIN CERTIFICATE" in bundle and "PRIVATE KEY" in bundle
    assert (tmp_path / "rt" / "certs" / "secure.0.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "rt" / "certs").stat().st_mode & 0o777 == 0o700
    for algorithm in ("roundrobin", "leastconn", "random(2)", "source"):
        assert f"balance {algorithm}" in text


def test_cli_render_check(tmp_path: Path) -> None:
    pop = everything(tmp_path)
    out = tmp_path / "haproxy.cfg"
    done = subprocess.run(
        [str(VENV_BIN / "anycastedge"), "forward", "render", "-c", str(pop), "--check",
         "-o", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "haproxy -c: OK" in done.stdout
    assert f"stats socket {tmp_path}/state/haproxy/stats.sock" in out.read_text()


def test_cli_render_refuses_what_haproxy_cannot(tmp_path: Path) -> None:
    """A builtin pop.yaml with UDP: forward render says which key, exit 1."""
    pop = tmp_path / "pop.yaml"
    pop.write_text(HEAD + "forward:\n  listeners:\n    d: {bind: '127.0.0.1:5353', "
                   "protocol: udp, backend: r}\n  backends:\n    r:\n      endpoints: "
                   "[{address: '127.0.0.1:53'}]\n")  # fmt: skip
    done = subprocess.run(
        [str(VENV_BIN / "anycastedge"), "forward", "render", "-c", str(pop)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "forward.listeners.d.protocol: udp listeners need engine: builtin" in done.stderr
