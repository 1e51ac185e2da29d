"""A throwaway TLS certificate for tests, made by Debian's ``openssl`` (nothing downloaded).

A missing ``openssl`` fails the test that asks for one: `make install` has it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, valid a day: (cert, key)."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is not installed (Debian package openssl)"
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=devops-agent-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key
