"""REST over HTTPS with the operator's certificate (rest_tls_cert_file / rest_tls_key_file), in a
real `ledgerd start` process: a client that trusts the certificate gets answers, plain HTTP on the
same port gets none, and half a setting is one clear error. The process is killed in a finally.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers.nodes import single_node_net
from tests.helpers.ports import free_ports, wait_for

BIN = Path(sys.executable).parent / "ledgerd"
CLI = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "cli"]
pytestmark = pytest.mark.timeout(90)


def operator_certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ledger.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "rest.crt", folder / "rest.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_rest_is_served_over_https_with_the_operators_certificate(tmp_path: Path) -> None:
    net = single_node_net(tmp_path)
    cert_file, key_file = operator_certificate(tmp_path)
    port, p2p_port = free_ports(2)
    half = subprocess.run([*CLI, "start", "--home", str(net.home)], capture_output=True, text=True, timeout=60,
                          env={"LEDGERD_REST_TLS_CERT_FILE": str(cert_file), "PATH": "/usr/bin:/bin"})
    assert half.returncode == 1 and "set both or neither" in half.stderr, half.stderr

    env = {"LEDGERD_REST_TLS_CERT_FILE": str(cert_file), "LEDGERD_REST_TLS_KEY_FILE": str(key_file),
           "LEDGERD_REST_PORT": str(port), "LEDGERD_P2P_PORT": str(p2p_port), "PATH": "/usr/bin:/bin"}
    log = (tmp_path / "node.log").open("wb")
    proc = subprocess.Popen([*CLI, "start", "--home", str(net.home)], stdout=log, stderr=subprocess.STDOUT, env=env)
    trusting = ssl.create_default_context(cafile=str(cert_file))
    try:
        def healthz() -> dict[str, object] | None:
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=trusting, timeout=5) as r:
                    body: dict[str, object] = json.loads(r.read())
                    return body
            except (urllib.error.URLError, ConnectionError):
                return None

        assert wait_for(healthz, 30, "the node over HTTPS")["status"] == "ok"
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
        with pytest.raises(urllib.error.URLError):  # a client that does not trust it is refused
            urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ssl.create_default_context(),
                                   timeout=5)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
