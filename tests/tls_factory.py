"""Test certificates made with the openssl command: self-signed ones, and a small CA issuing server and client
certificates (IP 127.0.0.1 and DNS localhost in the subject alternative names, which TLS host checks use)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is needed to make test certificates")
_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _run(*args: str) -> None:
    subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=60)


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """(key, certificate) of a self-signed certificate for 127.0.0.1, usable as its own CA."""
    folder.mkdir(parents=True, exist_ok=True)
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    _run("req", "-x509", *_KEY, "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    return key, cert


class TestCA:
    __test__ = False  # not a test class, whatever its name

    def __init__(self, folder: Path, name: str = "scanside-test-ca") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.key, self.cert = folder / f"{name}.key", folder / f"{name}.crt"
        _run("req", "-x509", *_KEY, "-keyout", str(self.key), "-out", str(self.cert), "-days", "1",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, name: str, client: bool = False) -> tuple[Path, Path]:
        """(key, certificate) signed by this CA, with common name `name`."""
        key, csr, cert = (self.folder / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
        ext = self.folder / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                       + ("extendedKeyUsage=clientAuth\n" if client else "extendedKeyUsage=serverAuth\n"))
        _run("req", *_KEY, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
        _run("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key), "-CAcreateserial",
             "-out", str(cert), "-days", "1", "-extfile", str(ext))
        return key, cert
