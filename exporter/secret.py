"""The database password: where it may come from, and a wrapper that never prints it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

# Group or other permission bits on a secret file: refused, the file must be private to its owner.
_SHARED_BITS = stat.S_IRWXG | stat.S_IRWXO


class Secret:
    """A string that does not show itself in repr(), str(), logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SecretError(Exception):
    """A secret file that cannot be used; the message names the file and the fix."""


def foreign_owner(path: Path, uid: int) -> str | None:
    """Why a secret file owned by `uid` is refused, or None: it must belong to the user the
    exporter runs as, or to root. Another user could replace the secret, or read it."""
    if uid in (os.geteuid(), 0):
        return None
    return (
        f"{path} is owned by uid {uid}, not by the exporter's user (uid {os.geteuid()}) or root;"
        f" run: chown {os.geteuid()} {path}"
    )


def read_private_file(path: Path) -> str:
    """Read a secret file, refusing one that group or others may read or write, or that
    another user owns."""
    try:
        # Non-blocking, so that a FIFO given by mistake is refused below instead of hanging.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            mode = info.st_mode
            if not stat.S_ISREG(mode):
                raise SecretError(f"{path} is not a regular file")
            if (foreign := foreign_owner(path, info.st_uid)) is not None:
                raise SecretError(foreign)
            if mode & _SHARED_BITS:
                raise SecretError(
                    f"{path} is accessible by group or others (mode {stat.S_IMODE(mode):04o});"
                    f" run: chmod 600 {path}"
                )
            data = handle.read()
    except OSError as exc:
        raise SecretError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"{path} is not valid UTF-8") from None


def password_from_file(path: Path) -> Secret:
    """The whole file is the password, less one trailing newline (as `echo pw > file` leaves)."""
    text = read_private_file(path)
    text = text.removesuffix("\n")
    text = text.removesuffix("\r")
    if not text:
        raise SecretError(f"{path} is empty")
    return Secret(text)


def password_from_credential(name: str, environ: dict[str, str]) -> Secret:
    """A systemd credential: LoadCredential=NAME:/path puts it in $CREDENTIALS_DIRECTORY/NAME."""
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise SecretError(
            f"credential {name!r} requested but $CREDENTIALS_DIRECTORY is not set"
            " (it is set by systemd's LoadCredential=)"
        )
    return password_from_file(Path(directory) / name)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def read_option_file(path: Path) -> dict[str, str]:
    """Read the [client] section of a MySQL option file (the file `mysql` and mysqld_exporter read).

    Only whole-line comments are recognised, because a password may contain `#`.
    Option names are normalised the way MySQL does: `-` and `_` are the same.
    """
    text = read_private_file(path)
    section: str | None = None
    options: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("!"):
            raise SecretError(f"{path}:{number}: !include directives are not supported")
        if line.startswith("["):
            if not line.endswith("]"):
                raise SecretError(f"{path}:{number}: malformed section header {line!r}")
            section = line[1:-1].strip().lower()
            continue
        if section != "client":
            continue
        key, sep, value = line.partition("=")
        options[key.strip().lower().replace("_", "-")] = _unquote(value.strip()) if sep else ""
    return options
