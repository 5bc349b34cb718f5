"""The in-cluster server's TLS: a CA and a server certificate the operator issues and keeps.
Issuing and checking are pure (keys and certificates in, PEM out, time injected); `Reconciler`
reads and writes the Secrets.

Three objects in the operator's namespace (docs/security.md, "TLS in a cluster"):

- Secret `l7scope-ca` (`ca.crt`, `ca.key`): the CA. Only the operator reads it (its Role names it
  by `resourceNames`); no pod mounts it.
- Secret `l7scope-server-tls` (type `kubernetes.io/tls`: `tls.crt`, `tls.key`, plus `ca.crt`):
  the server's certificate for the Service's four DNS names and its ClusterIP
  (and localhost, for port-forwards). The server pod
  mounts `tls.crt` and `tls.key` read-only (`--tls-cert/--tls-key`).
- ConfigMap `l7scope-server-ca` (`ca.crt`): the CA bundle the node agents verify the server with
  (`--server-ca-file`); no private key ever reaches a node.

Both are created once and reused (an operator restart re-reads them). `renewal_reason` says
when to issue again: the server certificate in its last third (30 of 90 days), its names or IP
changed, or not signed by the current CA; the CA in its last year (of 10). A new CA is added to
the bundle next to the old one while the old one is still valid, so agents that still hold the
old bundle keep verifying. The pod templates carry a hash of what they read, so a new
certificate or bundle rolls them (`apply_server`, `apply_node_agent`).

With `certManagerIssuer` set in the operator config, the operator does not issue anything: it
renders a cert-manager `Certificate` for the same names into the same Secret (`certificate`),
and cert-manager writes `ca.crt` into it; the node agents' bundle then comes from that key.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from l7scope.contracts import install

CA_SECRET: Final = "l7scope-ca"
SERVER_SECRET: Final = "l7scope-server-tls"
CA_CONFIGMAP: Final = install.CA_CONFIGMAP
CA_CERT_KEY: Final = install.CA_CERT_KEY
CA_KEY_KEY: Final = "ca.key"
TLS_CERT_KEY: Final = "tls.crt"
TLS_KEY_KEY: Final = "tls.key"
#: where the server reads its pair and the node agents their bundle
SERVER_TLS_DIR: Final = "/var/run/l7scope/tls"
AGENT_CA_DIR: Final = "/var/run/l7scope/server-ca"
TLS_HASH_ANNOTATION: Final = "l7scope.io/tls-hash"

CA_LIFETIME: Final = dt.timedelta(days=3650)
CA_RENEW_BEFORE: Final = dt.timedelta(days=365)
SERVER_LIFETIME: Final = dt.timedelta(days=90)
SERVER_RENEW_BEFORE: Final = dt.timedelta(days=30)
#: also in the server certificate, so `kubectl port-forward` clients verify it with the same CA
#: (`l7scope observe --server https://127.0.0.1:8686 --ca-file ca.crt`); the CA is this
#: install's own, trusted by nothing else
PORT_FORWARD_NAMES: Final = ("localhost",)
PORT_FORWARD_IPS: Final = ("127.0.0.1", "::1")
#: clocks of the nodes may be a little behind the operator's
BACKDATE: Final = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CA:
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class ServerPair:
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class Material:
    """What the pods read: the server's pair and the bundle the node agents trust."""
    ca: CA | None  # None with cert-manager (its CA is not ours)
    server: ServerPair | None
    bundle_pem: bytes

    def digest(self) -> str:
        h = hashlib.sha256(self.bundle_pem)
        if self.server is not None:
            h.update(self.server.cert_pem)
        return h.hexdigest()[:16]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def issue_ca(now: dt.datetime, common_name: str = "l7scope-ca") -> CA:
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return CA(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _san(dns_names: Iterable[str], ips: Iterable[str]) -> x509.SubjectAlternativeName:
    general: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    general += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    return x509.SubjectAlternativeName(general)


def issue_server(ca: CA, dns_names: list[str], ips: list[str], now: dt.datetime) -> ServerPair:
    """A server certificate for `dns_names` and `ips` (the first name is the CN), signed by `ca`."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = _key()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + SERVER_LIFETIME)
            .add_extension(_san(dns_names, ips), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return ServerPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def ca_renewal_reason(ca: CA | None, now: dt.datetime) -> str | None:
    """Why the CA must be issued again, or None to keep it."""
    if ca is None:
        return "no CA yet"
    try:
        cert = x509.load_pem_x509_certificate(ca.cert_pem)
        serialization.load_pem_private_key(ca.key_pem, password=None)
    except ValueError as e:
        return f"CA unreadable: {e}"
    if cert.not_valid_after_utc - now < CA_RENEW_BEFORE:
        return f"CA expires {cert.not_valid_after_utc:%Y-%m-%d}"
    return None


def server_renewal_reason(pair: ServerPair | None, ca: CA, dns_names: list[str], ips: list[str],
                          now: dt.datetime) -> str | None:
    """Why the server certificate must be issued again, or None to keep it."""
    if pair is None:
        return "no server certificate yet"
    try:
        cert = x509.load_pem_x509_certificate(pair.cert_pem)
        serialization.load_pem_private_key(pair.key_pem, password=None)
        ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    except ValueError as e:
        return f"certificate unreadable: {e}"
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return "not signed by the current CA"
    if cert.not_valid_after_utc - now < SERVER_RENEW_BEFORE:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d}"
    if cert.not_valid_before_utc > now:
        return "not valid yet"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "no subjectAltName"
    have = (set(san.get_values_for_type(x509.DNSName)),
            {str(i) for i in san.get_values_for_type(x509.IPAddress)})
    want = (set(dns_names), {str(ipaddress.ip_address(i)) for i in ips})
    if have != want:
        return f"names changed: {sorted(have[0] | have[1])} -> {sorted(want[0] | want[1])}"
    return None


def bundle(new: CA, previous_bundle: bytes, now: dt.datetime) -> bytes:
    """The node agents' bundle: the current CA, then each earlier CA still valid."""
    out = [new.cert_pem]
    for c in x509.load_pem_x509_certificates(previous_bundle) if previous_bundle.strip() else []:
        pem = c.public_bytes(serialization.Encoding.PEM)
        if pem != new.cert_pem and c.not_valid_after_utc > now:
            out.append(pem)
    return b"".join(out)


def ensure(ca: CA | None, pair: ServerPair | None, previous_bundle: bytes, dns_names: list[str],
           ips: list[str], now: dt.datetime) -> tuple[Material, list[str]]:
    """Keep what is still good, issue what is not. Returns the material and the reasons for
    what was issued (empty: nothing changed)."""
    reasons: list[str] = []
    why = ca_renewal_reason(ca, now)
    if why is not None or ca is None:
        reasons.append(f"new CA ({why})")
        ca = issue_ca(now)
    why = server_renewal_reason(pair, ca, dns_names, ips, now)
    if why is not None or pair is None:
        reasons.append(f"new server certificate ({why})")
        pair = issue_server(ca, dns_names, ips, now)
    return Material(ca, pair, bundle(ca, previous_bundle, now)), reasons


# ---- the objects ---------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def secret_bytes(secret: Mapping[str, Any] | None, key: str) -> bytes | None:
    data = (secret or {}).get("data") or {}
    value = data.get(key)
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return None


def ca_from_secret(secret: Mapping[str, Any] | None) -> CA | None:
    cert, key = secret_bytes(secret, CA_CERT_KEY), secret_bytes(secret, CA_KEY_KEY)
    return CA(cert, key) if cert and key else None


def pair_from_secret(secret: Mapping[str, Any] | None) -> ServerPair | None:
    cert, key = secret_bytes(secret, TLS_CERT_KEY), secret_bytes(secret, TLS_KEY_KEY)
    return ServerPair(cert, key) if cert and key else None


def ca_secret(m: Material, meta: dict[str, Any]) -> dict[str, Any]:
    assert m.ca is not None
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {**meta, "name": CA_SECRET},
            "type": "Opaque",
            "data": {CA_CERT_KEY: _b64(m.ca.cert_pem), CA_KEY_KEY: _b64(m.ca.key_pem)}}


def server_secret(m: Material, meta: dict[str, Any]) -> dict[str, Any]:
    assert m.server is not None
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {**meta, "name": SERVER_SECRET},
            "type": "kubernetes.io/tls",
            "data": {TLS_CERT_KEY: _b64(m.server.cert_pem), TLS_KEY_KEY: _b64(m.server.key_pem),
                     CA_CERT_KEY: _b64(m.bundle_pem)}}


def ca_configmap(m: Material, meta: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {**meta, "name": CA_CONFIGMAP},
            "data": {CA_CERT_KEY: m.bundle_pem.decode()}}


def certificate(issuer: str, issuer_kind: str, dns_names: list[str], ips: list[str],
                meta: dict[str, Any]) -> dict[str, Any]:
    """A cert-manager `Certificate` writing the server's pair (and `ca.crt`) into SERVER_SECRET."""
    spec: dict[str, Any] = {
        "secretName": SERVER_SECRET, "commonName": dns_names[0], "dnsNames": list(dns_names),
        "duration": f"{int(SERVER_LIFETIME.total_seconds() // 3600)}h",
        "renewBefore": f"{int(SERVER_RENEW_BEFORE.total_seconds() // 3600)}h",
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        "usages": ["server auth", "digital signature", "key encipherment"],
        "issuerRef": {"name": issuer, "kind": issuer_kind, "group": "cert-manager.io"},
    }
    if ips:
        spec["ipAddresses"] = list(ips)
    return {"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {**meta, "name": SERVER_SECRET}, "spec": spec}


# ---- the pods ------------------------------------------------------------------------------

def _annotate(template: dict[str, Any], digest: str) -> None:
    if digest:
        meta = template.setdefault("metadata", {})
        meta.setdefault("annotations", {})[TLS_HASH_ANNOTATION] = digest


def apply_server(workload: dict[str, Any], container: str, digest: str) -> None:
    """Serve HTTPS: the Secret's pair mounted read-only, `--tls-cert/--tls-key`, probes over
    HTTPS. `workload` is the server's Deployment or StatefulSet, changed in place."""
    template = workload["spec"]["template"]
    _annotate(template, digest)
    pod = template["spec"]
    c = next(c for c in pod["containers"] if c["name"] == container)
    c["command"] = [*c["command"], "--tls-cert", f"{SERVER_TLS_DIR}/{TLS_CERT_KEY}",
                    "--tls-key", f"{SERVER_TLS_DIR}/{TLS_KEY_KEY}"]
    c.setdefault("volumeMounts", []).append(
        {"name": "server-tls", "mountPath": SERVER_TLS_DIR, "readOnly": True})
    for probe in ("readinessProbe", "livenessProbe"):
        if "httpGet" in c.get(probe, {}):
            c[probe] = {**c[probe], "httpGet": {**c[probe]["httpGet"], "scheme": "HTTPS"}}
    # only the pair: the CA bundle (and never the CA key, which is not in this Secret) stays out
    pod.setdefault("volumes", []).append(
        {"name": "server-tls", "secret": {
            "secretName": SERVER_SECRET, "defaultMode": 0o440,
            "items": [{"key": TLS_CERT_KEY, "path": TLS_CERT_KEY},
                      {"key": TLS_KEY_KEY, "path": TLS_KEY_KEY}]}})


def apply_node_agent(daemonset: dict[str, Any], container: str, digest: str,
                     from_secret: bool = False) -> None:
    """Verify the server with the CA bundle: mounted read-only, `--server-ca-file`. The bundle
    is the ConfigMap (self-issued) or only the `ca.crt` key of the server's Secret
    (cert-manager)."""
    template = daemonset["spec"]["template"]
    _annotate(template, digest)
    pod = template["spec"]
    c = next(c for c in pod["containers"] if c["name"] == container)
    c["command"] = [*c["command"], "--server-ca-file", f"{AGENT_CA_DIR}/{CA_CERT_KEY}"]
    c.setdefault("volumeMounts", []).append(
        {"name": "server-ca", "mountPath": AGENT_CA_DIR, "readOnly": True})
    items = [{"key": CA_CERT_KEY, "path": CA_CERT_KEY}]
    source: dict[str, Any] = (
        {"secret": {"secretName": SERVER_SECRET, "defaultMode": 0o444, "items": items}}
        if from_secret else {"configMap": {"name": CA_CONFIGMAP, "defaultMode": 0o444, "items": items}})
    pod.setdefault("volumes", []).append({"name": "server-ca", **source})
