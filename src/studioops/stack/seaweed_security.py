"""SeaweedFS's own security for the embedded S3 server: every internal port needs a client certificate.

`weed mini` opens master, volume, filer and admin ports besides S3. Without this, any user of the machine could
read, write and delete every object through them. We write `security.toml` (SeaweedFS's documented config file,
found in weed's working directory) with:

- mutual TLS for every internal gRPC port and for the master, volume and filer HTTP ports, with a CA made for
  this STUDIOOPS_HOME. A client without our certificate fails the TLS handshake, so those ports neither serve
  nor accept data; only S3 (signed requests, presigned URLs) and the admin UI (a login) stay plain HTTP;
- JWT signing keys for volume and filer reads and writes, and directory metadata and the built-in UIs off
  (defence in depth behind the TLS);
- the admin UI's login: the S3 access key and secret key.

A file rather than WEED_* variables: a process's environment passes to every child, and the file sits in a 0700
directory, mode 0600, owned by the service user. The CA's private key is never written: it signs the one
certificate at creation and is dropped; a missing or expiring certificate gets a new CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from pathlib import Path

# Every component whose gRPC server or client reads a [grpc.NAME] section (weed/security/tls.go callers).
GRPC_COMPONENTS = ["master", "volume", "filer", "s3", "admin", "worker", "client", "msg_broker", "msg_agent", "mq"]
# HTTP servers that get TLS with a required client certificate ([https.NAME] with `ca`).
HTTPS_COMPONENTS = ["master", "volume", "filer"]
CERT_DAYS = 3650
RENEW_BEFORE = datetime.timedelta(days=30)


def _toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes (\\", \\\\, \\n, \\uXXXX) are TOML's too."""
    return json.dumps(value)


def write_private(path: Path, data: bytes, owner) -> None:
    """Create `path` with mode 0600 from the first byte (never readable by others, even for a moment)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
        handle.write(data)
    owner.own(tmp)
    tmp.replace(path)


def _certificate_valid(cert_path: Path) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    now = datetime.datetime.now(datetime.UTC)
    return cert.not_valid_after_utc - now > RENEW_BEFORE


def ensure_certificates(tls_dir: Path, owner) -> dict[str, Path]:
    """ca.crt, node.crt and node.key in `tls_dir` (made when missing or expiring); their paths."""
    paths = {"ca": tls_dir / "ca.crt", "cert": tls_dir / "node.crt", "key": tls_dir / "node.key"}
    if all(p.exists() for p in paths.values()) and _certificate_valid(paths["cert"]):
        return paths
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=CERT_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"studioops-ca-{secrets.token_hex(4)}")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    node_key = ec.generate_private_key(ec.SECP256R1())
    node_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "studioops-seaweedfs")]))
        .issuer_name(ca_name).public_key(node_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # One certificate for both ends: every component is a server and a client of the others.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    write_private(paths["key"], node_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()), owner)
    write_private(paths["cert"], node_cert.public_bytes(pem), owner)
    write_private(paths["ca"], ca_cert.public_bytes(pem), owner)
    return paths


def write_security_toml(path: Path, tls: dict[str, Path], admin_user: str, admin_password: str, owner) -> None:
    """SeaweedFS's security.toml: mTLS everywhere inside, fresh JWT keys (tokens live 10 s, so new keys at every
    start cost nothing), and the admin UI's login."""
    ca, cert, key = (_toml_string(str(tls[k])) for k in ("ca", "cert", "key"))
    lines = []
    for section in ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read"):
        lines += [f"[{section}]", f"key = {_toml_string(secrets.token_urlsafe(32))}", "expires_after_seconds = 10"]
    lines += ["[access]", "ui = false", "[filer.expose_directory_metadata]", "enabled = false",
              "[grpc]", f"ca = {ca}"]
    for name in GRPC_COMPONENTS:
        lines += [f"[grpc.{name}]", f"cert = {cert}", f"key = {key}"]
    for name in HTTPS_COMPONENTS:
        lines += [f"[https.{name}]", f"cert = {cert}", f"key = {key}", f"ca = {ca}"]
    lines += ["[https.client]", "enabled = true", f"cert = {cert}", f"key = {key}", f"ca = {ca}",
              "[admin]", f"user = {_toml_string(admin_user)}", f"password = {_toml_string(admin_password)}"]
    write_private(path, ("\n".join(lines) + "\n").encode(), owner)
