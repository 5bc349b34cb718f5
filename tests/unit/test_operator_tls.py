"""The operator's CA and server certificate (operator/tls.py), the server's NetworkPolicy
(operator/netpol.py) and their wiring into the rendered pods; time is injected."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509

from l7scope.operator import netpol, render, tls
from l7scope.operator.spec import ApplicationLayerSpec, check

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NAMES = ["l7scope-server", "l7scope-server.ns1", "l7scope-server.ns1.svc",
         "l7scope-server.ns1.svc.cluster.local"]


def _spec() -> ApplicationLayerSpec:
    c = check("tigera-secure", {"logCollection": {"collectLogs": "Enabled"}})
    assert c.spec is not None
    return c.spec


def test_issue_then_keep_until_the_last_third() -> None:
    m, reasons = tls.ensure(None, None, b"", NAMES, ["10.96.0.10"], T0)
    assert len(reasons) == 2 and m.ca is not None and m.server is not None
    cert = x509.load_pem_x509_certificate(m.server.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == NAMES
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["10.96.0.10"]
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(m.ca.cert_pem))
    assert m.bundle_pem == m.ca.cert_pem
    # an operator restart 59 days later: the same CA and certificate are kept
    again, reasons = tls.ensure(m.ca, m.server, m.bundle_pem, NAMES, ["10.96.0.10"],
                                T0 + dt.timedelta(days=59))
    assert reasons == [] and again == m
    # 61 days: less than 30 left -> a new server certificate, same CA
    renewed, reasons = tls.ensure(m.ca, m.server, m.bundle_pem, NAMES, ["10.96.0.10"],
                                  T0 + dt.timedelta(days=61))
    assert len(reasons) == 1 and reasons[0].startswith("new server certificate (expires")
    assert renewed.ca == m.ca and renewed.server != m.server


def test_new_names_or_foreign_signature_reissue() -> None:
    m, _ = tls.ensure(None, None, b"", NAMES, [], T0)
    assert m.ca is not None
    assert tls.server_renewal_reason(m.server, m.ca, NAMES, [], T0) is None
    why = tls.server_renewal_reason(m.server, m.ca, NAMES, ["10.96.0.10"], T0)
    assert why is not None and why.startswith("names changed")
    other = tls.issue_ca(T0)
    assert tls.server_renewal_reason(m.server, other, NAMES, [], T0) == "not signed by the current CA"
    garbage = tls.ServerPair(b"-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n", b"x")
    why = tls.server_renewal_reason(garbage, m.ca, NAMES, [], T0)
    assert why is not None and why.startswith("certificate unreadable")


def test_ca_rotation_keeps_the_old_ca_in_the_bundle() -> None:
    m, _ = tls.ensure(None, None, b"", NAMES, [], T0)
    later = T0 + dt.timedelta(days=3650 - 364)  # the CA's last year
    assert tls.ca_renewal_reason(m.ca, later - dt.timedelta(days=2)) is None
    r, reasons = tls.ensure(m.ca, m.server, m.bundle_pem, NAMES, [], later)
    assert [x.split(" (")[0] for x in reasons] == ["new CA", "new server certificate"]
    assert r.ca is not None and r.ca != m.ca and m.ca is not None
    certs = x509.load_pem_x509_certificates(r.bundle_pem)
    assert [c.subject for c in certs] == [x509.load_pem_x509_certificate(r.ca.cert_pem).subject] * 2
    assert r.bundle_pem.startswith(r.ca.cert_pem) and m.ca.cert_pem in r.bundle_pem
    # once the old CA has expired it leaves the bundle
    gone = tls.bundle(r.ca, r.bundle_pem, T0 + dt.timedelta(days=3651))
    assert gone == r.ca.cert_pem


def test_the_pair_serves_tls_that_python_verifies_by_name(tmp_path: Path) -> None:
    m, _ = tls.ensure(None, None, b"", NAMES, ["10.96.0.10"], dt.datetime.now(dt.UTC))
    assert m.server is not None
    (tmp_path / "c.pem").write_bytes(m.server.cert_pem)
    (tmp_path / "k.pem").write_bytes(m.server.key_pem)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")  # key matches the cert
    client = ssl.create_default_context(cadata=m.bundle_pem.decode())
    assert client.verify_mode == ssl.CERT_REQUIRED


def test_secrets_round_trip_and_hold_the_ca_key_only_in_the_ca_secret() -> None:
    m, _ = tls.ensure(None, None, b"", NAMES, [], T0)
    meta = {"namespace": "ns1"}
    ca_s, srv_s, cm = tls.ca_secret(m, meta), tls.server_secret(m, meta), tls.ca_configmap(m, meta)
    assert tls.ca_from_secret(ca_s) == m.ca and tls.pair_from_secret(srv_s) == m.server
    assert srv_s["type"] == "kubernetes.io/tls"
    assert set(srv_s["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    assert set(cm["data"]) == {"ca.crt"} and "PRIVATE KEY" not in cm["data"]["ca.crt"]
    assert m.ca is not None and m.ca.key_pem not in tls.secret_bytes(srv_s, "tls.key").__repr__().encode()
    assert tls.ca_from_secret({"data": {"ca.crt": "!!notbase64"}}) is None


def test_rendered_pods_use_https_and_mount_no_ca_key() -> None:
    m, _ = tls.ensure(None, None, b"", NAMES, [], T0)
    objs = render.render(_spec(), render.RenderContext(namespace="ns1", tls=m))
    ds = next(o for o in objs if o["kind"] == "DaemonSet")
    srv = next(o for o in objs if o["kind"] in ("Deployment", "StatefulSet"))
    agent = next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "l7-node-agent")
    cmd = agent["command"]
    assert cmd[cmd.index("--server") + 1] == "https://l7scope-server.ns1.svc:8686"
    assert cmd[cmd.index("--server-ca-file") + 1] == "/var/run/l7scope/server-ca/ca.crt"
    ds_vols = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert ds_vols["server-ca"]["configMap"]["name"] == tls.CA_CONFIGMAP
    assert not [v for v in ds_vols.values() if "secret" in v]  # nothing secret on the nodes
    pod = srv["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"][-4:] == ["--tls-cert", "/var/run/l7scope/tls/tls.crt",
                                 "--tls-key", "/var/run/l7scope/tls/tls.key"]
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert c["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    vol = next(v for v in pod["volumes"] if v["name"] == "server-tls")["secret"]
    assert vol["secretName"] == tls.SERVER_SECRET
    assert [i["key"] for i in vol["items"]] == ["tls.crt", "tls.key"]
    assert {"name": "server-tls", "mountPath": "/var/run/l7scope/tls", "readOnly": True} in c["volumeMounts"]
    for o in (ds, srv):
        assert o["spec"]["template"]["metadata"]["annotations"][tls.TLS_HASH_ANNOTATION] == m.digest()
    # a new certificate rolls both
    m2, _ = tls.ensure(m.ca, None, m.bundle_pem, NAMES, [], T0)
    assert m2.digest() != m.digest()


def test_cert_manager_certificate_rendering() -> None:
    objs = render.render(_spec(), render.RenderContext(
        namespace="ns1", cert_manager_issuer=("corp-ca", "ClusterIssuer")))
    cert = next(o for o in objs if o["kind"] == "Certificate")
    assert cert["apiVersion"] == "cert-manager.io/v1"
    assert cert["spec"]["secretName"] == tls.SERVER_SECRET
    assert cert["spec"]["dnsNames"] == [*NAMES, "localhost"]
    assert cert["spec"]["ipAddresses"] == ["127.0.0.1", "::1"]
    assert cert["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer",
                                         "group": "cert-manager.io"}
    assert cert["spec"]["duration"] == "2160h" and cert["spec"]["renewBefore"] == "720h"
    ds = next(o for o in objs if o["kind"] == "DaemonSet")
    vol = next(v for v in ds["spec"]["template"]["spec"]["volumes"] if v["name"] == "server-ca")
    assert vol["secret"] == {"secretName": tls.SERVER_SECRET, "defaultMode": 0o444,
                             "items": [{"key": "ca.crt", "path": "ca.crt"}]}  # only ca.crt
    assert not [o for o in render.render(_spec(), render.RenderContext()) if o["kind"] == "Certificate"]


def test_network_policy_admits_node_addresses_and_ui_pods_only() -> None:
    nodes: list[dict[str, Any]] = [{"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"},
                                       {"type": "Hostname", "address": "n1"},
                                       {"type": "InternalIP", "address": "fd00::2"}]}},
             {"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.10"},
                                       {"type": "ExternalIP", "address": "203.0.113.5"},
                                       {"type": "InternalIP", "address": "bogus"}]}},
             {"status": {}}]
    cidrs = netpol.node_addresses(nodes)
    assert cidrs == ["10.0.0.2/32", "10.0.0.10/32", "fd00::2/128"]
    objs = render.render(_spec(), render.RenderContext(namespace="ns1", node_cidrs=tuple(cidrs)))
    np = next(o for o in objs if o["kind"] == "NetworkPolicy")
    srv = next(o for o in objs if o["kind"] in ("Deployment", "StatefulSet"))
    assert np["spec"]["podSelector"]["matchLabels"] == srv["spec"]["selector"]["matchLabels"]
    assert np["spec"]["policyTypes"] == ["Ingress"]
    [rule] = np["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8686}]
    assert rule["from"][:3] == [{"ipBlock": {"cidr": c}} for c in cidrs]
    assert rule["from"][3] == {"namespaceSelector": {},
                               "podSelector": {"matchLabels": {"l7scope.io/ui-access": "true"}}}
    assert len(rule["from"]) == 4

