"""Certificates for the tests, made with the real `openssl` command line (EC P-256: fast)."""

from __future__ import annotations

import hashlib
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

# A new EC P-256 key, unencrypted, for `openssl req`.
_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=30
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path

    def fingerprint(self) -> str:
        """SHA-256 of the certificate (DER), to tell which one a server presented."""
        der = ssl.PEM_cert_to_DER_cert(self.cert.read_text(encoding="ascii"))
        return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class CA:
    """A certificate authority in `directory`, signing server and client certificates."""

    directory: Path
    name: str

    @classmethod
    def create(cls, directory: Path, name: str) -> CA:
        directory.mkdir(parents=True, exist_ok=True)
        _openssl(
            "req",
            "-x509",
            *_NEW_KEY,
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            # Python 3.13's strict verification wants a CA's key usage stated.
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            cwd=directory,
        )
        return cls(directory, name)

    @property
    def cert(self) -> Path:
        return self.directory / f"{self.name}.crt"

    def issue(
        self,
        name: str,
        *,
        sans: str = "IP:127.0.0.1,DNS:localhost",
        client: bool = False,
        directory: Path | None = None,
    ) -> Cert:
        """A certificate and its key (mode 0600) for `name`, signed by this CA."""
        where = directory or self.directory
        usage = "clientAuth" if client else "serverAuth"
        ext = where / f"{name}.ext"
        ext.write_text(
            # The key identifiers too: Python 3.13's default client context verifies strictly
            # (VERIFY_X509_STRICT) and refuses a certificate without authorityKeyIdentifier.
            f"subjectAltName={sans}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n",
            encoding="ascii",
        )
        _openssl(
            "req",
            *_NEW_KEY,
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=where,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            str(self.cert),
            "-CAkey",
            str(self.directory / f"{self.name}.key"),
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            ext.name,
            cwd=where,
        )
        key = where / f"{name}.key"
        key.chmod(0o600)
        return Cert(where / f"{name}.crt", key)
