"""Throwaway PKI for TLS tests, made with the openssl CLI: a CA and certificates it signs."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


def openssl(*args: str) -> None:
    """Run the openssl CLI (skipping the test if there is none); raise if it fails."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI")
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Ca:
    """A self-signed CA: its certificate and key files."""

    cert: Path
    key: Path


def make_ca(directory: Path, name: str = "anycastedge test CA") -> Ca:
    """A new CA in ``directory`` (files named after ``name``)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = name.replace(" ", "-")
    ca = Ca(directory / f"{stem}.pem", directory / f"{stem}.key")
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "2", "-keyout", str(ca.key), "-out", str(ca.cert), "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return ca


def make_cert(
    ca: Ca, directory: Path, stem: str, names: list[str], cn: str | None = None
) -> tuple[Path, Path]:
    """A certificate (and key) signed by ``ca`` for DNS ``names`` (no SAN if empty), with
    subject CN ``cn`` (default: the first name); returns (cert, key) paths."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, csr, ext = (
        directory / f"{stem}.{suffix}" for suffix in ("pem", "key", "csr", "ext")
    )
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn or names[0]}",
    )  # fmt: skip
    extensions = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        "extendedKeyUsage=serverAuth",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid",
    ]
    if names:
        extensions.append("subjectAltName=" + ",".join(f"DNS:{n}" for n in names))
    ext.write_text("\n".join(extensions) + "\n")
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-set_serial", str(secrets.randbits(63)), "-days", "2", "-extfile", str(ext),
        "-out", str(cert),
    )  # fmt: skip
    csr.unlink()
    ext.unlink()
    return cert, key
