"""A throwaway CA and a loopback server certificate, made with the ``openssl`` command-line tool.

Real TLS in tests needs a certificate the client can verify: s2n (awscrt's TLS) checks the hostname against the
subjectAltName, so ``127.0.0.1``, ``::1`` and ``localhost`` are all listed. The CA's private key is deleted once the
server certificate is signed: nothing else can ever be issued under this CA, so trusting it trusts exactly one key.

The openssl binary is driven rather than a Python crypto library so that the project gains no dependency, and a
private config file is used so that a system ``openssl.cnf`` cannot change what gets issued. Every openssl run is
bounded by a timeout; the async variant kills a run that is cancelled instead of leaving it behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CA_NAME = "ca.pem"
CERT_NAME = "server.pem"
KEY_NAME = "server.key"
DEFAULT_DAYS = 30
DEFAULT_STEP_TIMEOUT = 30.0

_CA_KEY = "ca.key"
_CSR = "server.csr"
_CONFIG = "openssl.cnf"

# Only the sections named on the command lines below are read; [req] needs a distinguished_name section even when
# the subject is given with -subj. AKID/SKID make the chain acceptable under strict (RFC 5280) verification.
_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
[dn]
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,IP:::1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


class OpenSSLUnavailable(RuntimeError):
    """The ``openssl`` command is not installed, so no certificate can be made (tests skip on this)."""


class CertificateGenerationError(RuntimeError):
    """An openssl run failed or overran its timeout; the message carries openssl's own error text."""


@dataclass(frozen=True, slots=True)
class CertPaths:
    """Where the PEM files are: trust ``ca_file`` on the client, serve ``cert_file`` + ``key_file``."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def find_openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        raise OpenSSLUnavailable("the openssl command is not installed (Debian package: openssl)")
    return path


def _serial() -> str:
    # Distinct serials per run: a client that cached a certificate from an earlier run must not confuse the two.
    return f"0x{secrets.randbits(63) | 1:x}"


def _commands(openssl: str, directory: Path, days: int) -> list[list[str]]:
    config = str(directory / _CONFIG)
    ca, ca_key = str(directory / CA_NAME), str(directory / _CA_KEY)
    cert, key, csr = str(directory / CERT_NAME), str(directory / KEY_NAME), str(directory / _CSR)
    common = ["-config", config, "-sha256"]
    return [
        [openssl, "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", str(days), "-subj", "/CN=nwp500d throwaway test CA", "-extensions", "ca_ext",
         "-set_serial", _serial(), *common],
        [openssl, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=localhost", *common],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-set_serial", _serial(),
         "-days", str(days), "-out", cert, "-extfile", config, "-extensions", "server_ext", "-sha256"],
    ]


def _prepare(directory: Path, days: int) -> tuple[list[list[str]], dict[str, str]]:
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    openssl = find_openssl()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = directory / _CONFIG
    config.write_text(_OPENSSL_CONFIG, encoding="ascii")
    # OPENSSL_CONF too, so that nothing from the system configuration is loaded implicitly.
    env = {**os.environ, "OPENSSL_CONF": str(config)}
    return _commands(openssl, directory, days), env


def _discard(directory: Path, names: tuple[str, ...]) -> None:
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()


def _finish(directory: Path) -> CertPaths:
    _discard(directory, (_CA_KEY, _CSR, _CONFIG))
    paths = CertPaths(directory / CA_NAME, directory / CERT_NAME, directory / KEY_NAME)
    paths.ca_file.chmod(0o644)
    paths.cert_file.chmod(0o644)
    paths.key_file.chmod(0o600)
    return paths


def _failed(argv: list[str], detail: str) -> CertificateGenerationError:
    return CertificateGenerationError(f"openssl {argv[1]} failed: {detail.strip()[-2000:]}")


def _cleanup_after_failure(directory: Path) -> None:
    _discard(directory, (_CA_KEY, _CSR, _CONFIG, CA_NAME, CERT_NAME, KEY_NAME))


def generate_certs(
    directory: Path, *, days: int = DEFAULT_DAYS, step_timeout: float = DEFAULT_STEP_TIMEOUT
) -> CertPaths:
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` into ``directory`` (created 0700 if missing).

    Blocking; ``step_timeout`` bounds each of the three openssl runs. From a coroutine use :func:`generate_certs_async`.
    """
    commands, env = _prepare(directory, days)
    try:
        for argv in commands:
            try:
                done = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=step_timeout, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise _failed(argv, f"no result within {step_timeout} s") from exc
            if done.returncode != 0:
                raise _failed(argv, done.stderr.decode(errors="replace"))
        return _finish(directory)
    except BaseException:
        _cleanup_after_failure(directory)
        raise


async def _run_async(argv: list[str], env: dict[str, str], bound: float) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    try:
        async with asyncio.timeout(bound):
            _, stderr = await proc.communicate()
    except BaseException as exc:
        # Timed out or cancelled: the run must not outlive us. Reaping is quick once SIGKILL is sent.
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
        if isinstance(exc, TimeoutError):
            raise _failed(argv, f"no result within {bound} s") from exc
        raise
    if proc.returncode != 0:
        raise _failed(argv, stderr.decode(errors="replace"))


async def generate_certs_async(
    directory: Path, *, days: int = DEFAULT_DAYS, step_timeout: float = DEFAULT_STEP_TIMEOUT
) -> CertPaths:
    """Like :func:`generate_certs`, without blocking the event loop (RSA key generation takes a noticeable while)."""
    commands, env = _prepare(directory, days)
    try:
        for argv in commands:
            await _run_async(argv, env, step_timeout)
        return _finish(directory)
    except BaseException:
        _cleanup_after_failure(directory)
        raise
