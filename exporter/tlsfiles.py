"""Certificate, key and CA files loaded into SSL contexts, for the web server and the database.

Problems come back as values naming which file is at fault, so each caller reports them under
its own setting names. A private key that any local user could read is refused.
"""

from __future__ import annotations

import ssl
import stat
from pathlib import Path
from typing import Literal, NamedTuple

from exporter.secret import foreign_owner

# MySQL's --ssl-mode vocabulary, lower case: what the exporter asks of its database connection.
DATABASE_TLS_MODES = ("disabled", "preferred", "required", "verify_ca", "verify_identity")


class FileProblem(NamedTuple):
    which: Literal["cert", "key", "ca"]
    message: str


class TLSFilesError(Exception):
    """Certificate files that cannot be used; one FileProblem each."""

    def __init__(self, problems: list[FileProblem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = tuple(problems)


def reason(exc: OSError) -> str:
    """What went wrong loading a certificate or key, in OpenSSL's words when it has some."""
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)  # e.g. KEY_VALUES_MISMATCH, NO_CERTIFICATE_OR_CRL_FOUND
    return exc.strerror or str(exc)


def too_open(key: Path) -> str | None:
    """Why a file holding a private key may not be used (others may read it, or another user
    owns it), or None."""
    try:
        info = key.stat()
    except OSError as exc:
        return f"cannot read {key}: {exc.strerror or exc}"
    mode = info.st_mode
    if (foreign := foreign_owner(key, info.st_uid)) is not None:
        return foreign
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        return (
            f"{key} is accessible by others (mode {stat.S_IMODE(mode):04o});"
            f" run: chmod 600 {key} (or 640, with a group the exporter's user is in)"
        )
    return None


def load_files(
    context: ssl.SSLContext, *, cert: Path | None, key: Path | None, ca: Path | None
) -> list[FileProblem]:
    """Load a certificate with its key, and CA certificates to verify the peer with."""
    problems: list[FileProblem] = []
    if cert is not None and key is not None:
        if (problem := too_open(key)) is not None:
            problems.append(FileProblem("key", problem))
        if not problems:
            try:
                context.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as exc:
                problems.append(
                    FileProblem("cert", f"cannot load {cert} with key {key}: {reason(exc)}")
                )
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            problems.append(FileProblem("ca", f"cannot load {ca}: {reason(exc)}"))
    return problems


def database_context(
    mode: str, *, ca: Path | None, cert: Path | None, key: Path | None
) -> ssl.SSLContext:
    """The client context for tls_mode required, verify_ca or verify_identity: TLS 1.2 or
    later; the server's certificate checked against `ca` (or the system's CAs) and its host
    name as the modes ask; `cert` presented to the server if given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = mode == "verify_identity"
    context.verify_mode = ssl.CERT_NONE if mode == "required" else ssl.CERT_REQUIRED
    if ca is None and mode != "required":
        context.load_default_certs()
    problems = load_files(context, cert=cert, key=key, ca=ca)
    if problems:
        raise TLSFilesError(problems)
    return context
