"""Dropping root: serve binds its sockets as root, then goes on as an unprivileged user."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from anycastedge.errors import AnycastEdgeError

DEFAULT_USER = "anycastedge"


class PrivilegeError(AnycastEdgeError):
    """The configured user cannot be switched to; the message names pop.yaml's ``user``."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the process runs as after ``drop_privileges``, and why."""

    user: str
    uid: int
    gid: int
    note: str


def planned_user(configured: str | None) -> pwd.struct_passwd | None:
    """The user ``drop_privileges`` will switch to (None: it will not switch): for children
    started before it, such as HAProxy, which switches by itself."""
    name = configured or DEFAULT_USER
    if os.geteuid() != 0 or name == "root":
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def drop_privileges(configured: str | None, state_dir: Path) -> Identity:
    """Become ``configured`` (default: ``anycastedge`` if that user exists) when running as
    root, keeping the state directory writable; raises PrivilegeError when a configured user
    does not exist or root could be regained afterwards."""
    me = pwd.getpwuid(os.geteuid())
    if os.geteuid() != 0:
        note = "" if configured in (None, me.pw_name) else f"user: {configured} ignored: not root"
        return Identity(me.pw_name, me.pw_uid, me.pw_gid, note)
    name = configured or DEFAULT_USER
    if name == "root":
        return Identity("root", 0, 0, "running as root (user: root in pop.yaml)")
    try:
        target = pwd.getpwnam(name)
    except KeyError:
        if configured is not None:
            raise PrivilegeError(f"user: no such user {name!r} on this host") from None
        return Identity("root", 0, 0, f"running as root: there is no user {DEFAULT_USER!r} "
                        "(create it, or name another with user: in pop.yaml)")  # fmt: skip
    # Files the root process made there (serials.json at the first load) are replaced, not
    # rewritten: owning the directory is enough for the user to go on writing state.
    state_dir.mkdir(parents=True, exist_ok=True)
    if state_dir.stat().st_uid == 0:
        os.chown(state_dir, target.pw_uid, target.pw_gid)
    os.initgroups(name, target.pw_gid)
    os.setgid(target.pw_gid)
    os.setuid(target.pw_uid)
    try:
        os.setuid(0)
    except PermissionError:
        return Identity(name, target.pw_uid, target.pw_gid, f"running as {name}")
    raise PrivilegeError(f"user: switched to {name!r} but could become root again")
