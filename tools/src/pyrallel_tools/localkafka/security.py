"""TLS material and SASL/SCRAM settings of the local Kafka's SECURE listener (``pyrallel kafka up --security
sasl_ssl``).

:func:`make_certificates` makes a throwaway CA and one server certificate for 127.0.0.1 with the system
``openssl`` CLI (no Python crypto dependency, no ``keytool``: the broker reads PEM keystores), so clients verify the
broker against the CA file the way they would in production. :func:`listener_properties` is what every broker's
``server.properties`` gets for the listener; :func:`scram_format_argument` is the SCRAM user that
``kafka-storage format --add-scram`` writes into the KRaft bootstrap metadata (KIP-900), so the user exists before
the first broker starts. :func:`client_properties` is what a client sets to connect. Called by
:class:`~pyrallel_tools.localkafka.cluster.LocalKafka` on the caller's thread while it creates a run directory, and
by tests for the client side.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pyrallel_tools.localkafka.errors import LocalKafkaError

log = logging.getLogger(__name__)

LISTENER = "SECURE"
SASL_MECHANISM = "SCRAM-SHA-512"
SCRAM_USER = "pyrallel"
CERT_DAYS = 30
"""The certificates outlive any local run; a cluster left up longer is made anew with ``down`` and ``up``."""
OPENSSL_TIMEOUT_S = 60.0
_SERVER_EXTENSIONS = (
    "basicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=serverAuth\n"
    "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
)
"""librdkafka checks the broker's name (``ssl.endpoint.identification.algorithm=https``, its default) against the
certificate's subjectAltName: the listeners advertise 127.0.0.1, so the SAN carries that IP."""


@dataclass(frozen=True, slots=True)
class Certificates:
    """Where :func:`make_certificates` left its files; the CA's key stays in the same directory, never used again
    after signing."""

    ca_file: Path
    """The CA certificate: a client's ``ssl.ca.location``."""
    keystore_file: Path
    """The broker's PEM keystore: its private key (PKCS#8, unencrypted) and certificate chain."""


def require_openssl() -> str:
    """The ``openssl`` executable, or LocalKafkaError naming it; called before anything is written."""
    found = shutil.which("openssl")
    if found is None:
        raise LocalKafkaError(
            "'pyrallel kafka up --security sasl_ssl' makes its CA and broker certificate with the 'openssl' "
            "command, which is not on PATH; install OpenSSL (e.g. apt-get install openssl) or start without "
            "--security."
        )
    return found


def _openssl(openssl: str, directory: Path, *args: str) -> None:
    try:
        done = subprocess.run([openssl, *args], cwd=directory, capture_output=True, text=True,
                              timeout=OPENSSL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(f"openssl {args[0]} failed in {directory}: {exc}") from exc
    if done.returncode != 0:
        raise LocalKafkaError(f"openssl {' '.join(args[:2])} failed in {directory} (exit {done.returncode}):\n"
                              f"{(done.stdout + done.stderr).strip()[-1500:]}")


def make_certificates(directory: Path) -> Certificates:
    """A fresh CA and a server certificate for 127.0.0.1 signed by it, in ``directory`` (created; keys 0600)."""
    openssl = require_openssl()
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    server_key, server_csr, server_cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    extensions = directory / "server.ext"
    extensions.write_text(_SERVER_EXTENSIONS)
    for key in (ca_key, server_key):
        _openssl(openssl, directory, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                 "-out", key.name)
        key.chmod(0o600)
    _openssl(openssl, directory, "req", "-x509", "-new", "-key", ca_key.name, "-sha256", "-days", str(CERT_DAYS),
             "-subj", "/CN=pyrallel local Kafka CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", ca_cert.name)
    _openssl(openssl, directory, "req", "-new", "-key", server_key.name, "-subj", "/CN=127.0.0.1",
             "-out", server_csr.name)
    _openssl(openssl, directory, "x509", "-req", "-in", server_csr.name, "-CA", ca_cert.name, "-CAkey",
             ca_key.name, "-set_serial", str(secrets.randbits(63)), "-sha256", "-days", str(CERT_DAYS),
             "-extfile", extensions.name, "-out", server_cert.name)
    keystore = directory / "broker-keystore.pem"
    keystore.write_text(server_key.read_text() + server_cert.read_text() + ca_cert.read_text())
    keystore.chmod(0o600)
    server_csr.unlink()
    log.info("Made a CA (%s) and a broker certificate for 127.0.0.1", ca_cert)
    return Certificates(ca_file=ca_cert, keystore_file=keystore)


def new_password() -> str:
    """The SCRAM user's password: hex only, so it needs no quoting in ``--add-scram`` or a JAAS line."""
    return secrets.token_hex(16)


def scram_format_argument(user: str, password: str) -> str:
    """The ``kafka-storage format --add-scram`` value creating ``user`` (KIP-900's syntax)."""
    return f"{SASL_MECHANISM}=[name={user},password={password}]"


def listener_properties(keystore: Path) -> dict[str, str]:
    """The SECURE listener's broker properties: TLS from a PEM keystore, SCRAM-SHA-512 as the only mechanism.

    The broker's SCRAM login module needs no user of its own: the listener only authenticates clients against
    the credentials in the metadata (the brokers talk to each other over PLAINTEXT).
    """
    prefix = f"listener.name.{LISTENER.lower()}"
    mechanism = SASL_MECHANISM.lower()
    return {
        f"{prefix}.ssl.keystore.type": "PEM",
        f"{prefix}.ssl.keystore.location": str(keystore),
        f"{prefix}.ssl.client.auth": "none",
        f"{prefix}.sasl.enabled.mechanisms": SASL_MECHANISM,
        f"{prefix}.{mechanism}.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    }


def client_properties(user: str, password: str, ca_file: str | os.PathLike[str]) -> dict[str, str]:
    """The librdkafka properties a client sets (besides ``bootstrap.servers``) for the SECURE listener: what
    ``pyrallel kafka up --security sasl_ssl`` prints and a ConsumerConfig's ``kafka`` takes."""
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": SASL_MECHANISM,
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": str(ca_file),
    }
