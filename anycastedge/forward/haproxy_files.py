"""Writing a rendered HAProxy configuration and its files, and asking HAProxy to check it.

I/O without Twisted: serve calls it from a thread or at start, the CLI directly.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from anycastedge.forward.haproxy_render import Rendered, Runtime, render
from anycastedge.forward.model import ForwardConfig

CHECK_TIMEOUT = 30.0  # seconds haproxy -c may take (it loads every certificate)


def write_rendered(rendered: Rendered, runtime: Runtime, config_path: str | None = None) -> bool:
    """Write what the configuration reads (``write_support``) and the configuration itself (at
    ``config_path``, default the runtime's), each atomically; whether any content changed."""
    changed = write_support(rendered, runtime)
    target = Path(config_path or runtime.config_path)
    return replace_file(target, rendered.config.encode(), 0o644) or changed


def write_support(rendered: Rendered, runtime: Runtime) -> bool:
    """Write the certificate bundles (chain and key, 0600, in a 0700 directory) and crt-lists,
    each atomically (temp file and rename in its directory); whether any content changed."""
    changed = False
    directory = Path(runtime.directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert_dir = Path(runtime.cert_dir)
    cert_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(cert_dir, 0o700)  # mkdir's mode is masked by the umask, and an old one may differ
    for bundle, cert, key in rendered.bundles:
        # The chain, then the key: what HAProxy's crt takes; a missing newline between them
        # would merge two PEM lines.
        chain, secret = Path(cert).read_bytes(), Path(key).read_bytes()
        content = chain + (b"" if chain.endswith(b"\n") else b"\n") + secret
        changed |= replace_file(Path(bundle), content, 0o600)
    for path, text in rendered.crt_lists:
        changed |= replace_file(Path(path), text.encode(), 0o600)
    return changed


def replace_file(path: Path, content: bytes, mode: int) -> bool:
    """Put ``content`` at ``path`` with ``mode`` unless it is there already; whether it changed.

    The new file is complete before it takes the name: a reader sees the old or the new.
    """
    try:
        if path.read_bytes() == content and (path.stat().st_mode & 0o777) == mode:
            return False
    except FileNotFoundError:
        pass
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return True


# Not -q: it silences the alerts too, leaving a refusal without a word of why.
CHECK_ARGS = ("-c", "-f")


def check_words(output: str) -> str:
    """What ``haproxy -c`` said that matters: its alerts and warnings without the [NOTICE]
    lines (version, executable path); all of it if that leaves nothing."""
    kept = [line for line in output.strip().splitlines() if not line.startswith("[NOTICE]")]
    return "\n".join(kept).strip() or output.strip()


def check_config(binary: str, path: str) -> tuple[bool, str]:
    """``binary -c -f path``: whether HAProxy accepts the file, and what it said."""
    try:
        done = subprocess.run(
            [binary, *CHECK_ARGS, path],
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        return False, f"{binary}: not found (is HAProxy installed?)"
    except subprocess.TimeoutExpired:
        return False, f"{binary} -c took over {CHECK_TIMEOUT:g} s"
    except OSError as exc:
        return False, f"{binary}: {exc}"
    return done.returncode == 0, check_words(done.stdout + done.stderr)


def check_forward(config: ForwardConfig, runtime: Runtime) -> tuple[bool, str]:
    """Whether HAProxy accepts what ``config`` renders to, certificates included: rendered
    into a temporary directory and checked there (``runtime``'s files are left alone); what
    HAProxy said, with ``runtime``'s paths in place of the temporary ones."""
    with tempfile.TemporaryDirectory(prefix="haproxy-") as directory:
        trial = Runtime(directory, runtime.user, runtime.group)
        write_rendered(render(config, trial), trial)
        ok, output = check_config(config.haproxy.binary, trial.config_path)
    return ok, output.replace(directory, runtime.directory)
