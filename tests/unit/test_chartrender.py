"""tools/chartrender, the chart renderer (Go text/template + sprig + Helm's functions), on small
charts whose `helm template` output follows from Helm's documented semantics, and the l7scope
chart through it: values schema, NOTES.txt, the values that reach the operator's pod and flags.
The binary is built by scripts/setup.d/chartrender.sh; these tests run it."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from l7scope.operator import chart, render
from l7scope.operator.cli import operator as operator_command
from l7scope.operator.spec import check

DEMO = {
    "Chart.yaml": """\
        apiVersion: v2
        name: demo
        version: 1.2.3
        appVersion: "4.5"
        """,
    "values.yaml": """\
        name: ""
        replicas: 2
        big: 1000000
        ports: [80, 443]
        labels: {b: "2", a: "1"}
        enabled: true
        greeting: "hi {{ .Release.Name }}"
        """,
    "templates/_helpers.tpl": """\
        {{- define "demo.fullname" -}}
        {{- default .Chart.Name .Values.name }}-{{ .Release.Name }}
        {{- end }}
        """,
    "templates/b.yaml": """\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: {{ include "demo.fullname" . }}
          namespace: {{ .Release.Namespace }}
          labels:
            {{- toYaml .Values.labels | nindent 4 }}
        spec:
          replicas: {{ .Values.replicas }}
        ---
        {{- if not .Values.enabled }}
        apiVersion: v1
        kind: ConfigMap
        {{- end }}
        ---
        apiVersion: v1
        kind: Service
        metadata:
          name: svc
        spec:
          ports:
          {{- range .Values.ports }}
          - port: {{ . }}
          {{- end }}
        """,
    "templates/a.yaml": """\
        apiVersion: v1
        kind: ServiceAccount
        metadata:
          name: {{ required "sa is required" .Values.sa }}
          annotations:
            chart: {{ .Chart.Name }}-{{ .Chart.Version }}
            app: {{ .Chart.AppVersion | quote }}
            greeting: {{ tpl .Values.greeting . | quote }}
            big: "{{ .Values.big }}"
            missing: "{{ .Values.nothing }}"
        """,
    "templates/NOTES.txt": "Installed {{ .Release.Name }} in {{ .Release.Namespace }}.\n",
}


def _chart(tmp: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = tmp / "chart" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return tmp / "chart"


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(chart.renderer()), *map(str, args)], capture_output=True,
                          text=True, timeout=60, check=False)


def _values(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(textwrap.dedent(text))
    return p


def test_renders_as_helm_template(tmp_path: Path) -> None:
    c = _chart(tmp_path, DEMO)
    r = _run("--name", "rel", "--namespace", "ns1", "-f", _values(tmp_path, "v.yaml", "sa: robot\n"), c)
    assert r.returncode == 0, r.stderr
    # Helm's install order (ServiceAccount, Service, Deployment), "# Source:" per document, the
    # empty ConfigMap document dropped, toYaml's keys sorted and its trailing newline trimmed,
    # numbers from values.yaml are float64 (1000000 prints as 1e+06, as in Helm), a missing key
    # prints nothing (missingkey=zero, "<no value>" removed)
    assert r.stdout == textwrap.dedent("""\
        ---
        # Source: demo/templates/a.yaml
        apiVersion: v1
        kind: ServiceAccount
        metadata:
          name: robot
          annotations:
            chart: demo-1.2.3
            app: "4.5"
            greeting: "hi rel"
            big: "1e+06"
            missing: ""
        ---
        # Source: demo/templates/b.yaml
        apiVersion: v1
        kind: Service
        metadata:
          name: svc
        spec:
          ports:
          - port: 80
          - port: 443
        ---
        # Source: demo/templates/b.yaml
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: demo-rel
          namespace: ns1
          labels:
            a: "1"
            b: "2"
        spec:
          replicas: 2
        """)


def test_values_files_merge_as_helm_coalesces(tmp_path: Path) -> None:
    c = _chart(tmp_path, DEMO)
    one = _values(tmp_path, "1.yaml", "sa: robot\nreplicas: 3\nlabels: {a: x}\n")
    two = _values(tmp_path, "2.yaml", "labels: {b: null, c: '3'}\nports: [8080]\nenabled: false\n")
    r = _run("--name", "rel", "-f", one, "-f", two, c)
    assert r.returncode == 0, r.stderr
    docs = {d["kind"]: d for d in yaml.safe_load_all(r.stdout) if d}
    # maps merge key by key, a null removes the chart's default, lists and scalars replace
    assert docs["Deployment"]["metadata"]["labels"] == {"a": "x", "c": "3"}
    assert docs["Deployment"]["spec"]["replicas"] == 3
    assert docs["Deployment"]["metadata"]["namespace"] == "default"
    assert docs["Service"]["spec"]["ports"] == [{"port": 8080}]
    assert docs["ConfigMap"] == {"apiVersion": "v1", "kind": "ConfigMap"}  # `if not` now true
    r = _run("--set", "sa=bot", "--set", "replicas=5", c)
    assert r.returncode == 0, r.stderr
    assert "replicas: 5" in r.stdout and "name: bot" in r.stdout


def test_required_fails_with_its_message(tmp_path: Path) -> None:
    r = _run(_chart(tmp_path, DEMO))
    assert r.returncode == 1
    assert r.stderr.startswith("Error: execution error at (demo/templates/a.yaml:4:"), r.stderr
    assert r.stderr.rstrip().endswith(": sa is required"), r.stderr


def test_notes_and_crds(tmp_path: Path) -> None:
    c = _chart(tmp_path, {**DEMO, "crds/x.yaml": "kind: CustomResourceDefinition\n"})
    sa = _values(tmp_path, "v.yaml", "sa: robot\n")
    r = _run("--name", "rel", "--namespace", "team", "--notes", "-f", sa, c)
    assert (r.returncode, r.stdout) == (0, "Installed rel in team.\n"), r.stderr
    r = _run("--include-crds", "-f", sa, c)
    assert r.stdout.startswith("---\n# Source: demo/crds/x.yaml\nkind: CustomResourceDefinition\n\n"
                               "---\n# Source: demo/templates/a.yaml\n"), r.stdout
    assert "NOTES" not in r.stdout and "Installed" not in r.stdout


def test_missing_renderer_names_the_setup_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("L7SCOPE_CHARTRENDER_CACHE", str(tmp_path))
    with pytest.raises(chart.ChartError, match="scripts/setup.d/chartrender.sh"):
        chart.render()


@pytest.mark.parametrize(("values", "message"), [
    ({"image": 3}, "- image: Invalid type. Expected: object, given: integer"),
    ({"imagePullSecret": [{"name": "reg"}]}, "- (root): Additional property imagePullSecret is not allowed"),
    ({"image": {"pullPolicy": "Sometimes"}}, "- image.pullPolicy: image.pullPolicy must be one of"),
    ({"operator": {"tolerations": {"key": "x"}}}, "- operator.tolerations: Invalid type. Expected: array"),
    ({"operator": {"securityContext": {"allowPrivilegeEscalation": True}}},
     "- operator.securityContext.allowPrivilegeEscalation: "),
    ({"logStorage": {"engine": "sqlite"}}, "- logStorage.engine: logStorage.engine must be one of"),
    ({"logStorage": {"retention": {"l7Logs": 0}}},
     "- logStorage.retention.l7Logs: Must be greater than or equal to 1"),
    ({"logStorage": {"clickhouse": {"url": "clickhouse://ch:9000", "user": "a"}}},
     "- logStorage.clickhouse: Additional property user is not allowed"),
    ({"nodeAgentConfiguration": {"tproxyMode": "On"}}, "- nodeAgentConfiguration.tproxyMode: "),
    ({"nodeAgentConfiguration": {"l7LogsFlushInterval": True}},
     "- nodeAgentConfiguration.l7LogsFlushInterval: Invalid type. Expected: [integer,string], given: boolean"),
])
def test_values_schema_rejects(values: dict[str, Any], message: str) -> None:
    with pytest.raises(chart.ChartError) as e:
        chart.render(values=values)
    assert str(e.value).startswith("values don't meet the specifications of the schema(s) in the "
                                   "following chart(s):\nl7scope:\n"), e.value
    assert message in str(e.value), e.value


def test_values_schema_follows_the_crds() -> None:
    """logStorage and nodeAgentConfiguration in values.schema.json are the CRDs' spec schemas."""
    assert (chart.CHART / "values.schema.json").read_text() == chart.values_schema_text(), \
        "values.schema.json is stale: python -m l7scope.operator.chart --values-schema"
    ok = {"logStorage": {"engine": "clickhouse", "clickhouse": {"url": "clickhouse://ch:9000"},
                         "server": {"resources": {"limits": {"cpu": 2, "memory": "1Gi"}}}},
          "nodeAgentConfiguration": {"l7LogsFlushInterval": 5, "l7RouteTemplates": {"enabled": True}}}
    ls = next(d for d in chart.render(values=ok) if d["kind"] == "LogStorage")
    assert ls["spec"]["server"] == {"resources": {"limits": {"cpu": 2, "memory": "1Gi"}}}


def test_notes_name_the_release_namespace() -> None:
    notes = chart.template(namespace="team-a", notes=True)
    assert "kubectl label namespace team-a pod-security.kubernetes.io/enforce=privileged" in notes
    assert "kind: ApplicationLayer" in notes and "projectcalico.org/l7-logging=true" in notes
    assert "kubectl -n team-a port-forward svc/l7scope-server 8686:8686" in notes
    assert "l7scope dashboard -n team-a" in notes and "l7scope status -n team-a" in notes
    assert "is not published" in notes
    secret = chart.template(notes=True, values={"image": {"repository": "reg.example/l7scope"}})
    assert "is not published" not in secret and "reg.example/l7scope:0.1.0" in secret


def _operator(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Deployment")


def test_standard_labels_on_every_object() -> None:
    docs = [d for d in chart.render() if d["kind"] not in ("Namespace", "CustomResourceDefinition")]
    assert {d["kind"] for d in docs} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                                         "RoleBinding", "Deployment", "LogStorage", "NodeAgentConfiguration"}
    for d in docs:
        labels = d["metadata"]["labels"]
        assert labels["helm.sh/chart"] == "l7scope-0.1.0", d["kind"]
        assert labels["app.kubernetes.io/name"] == "l7scope"
        assert labels["app.kubernetes.io/instance"] == chart.RELEASE
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
    dep = _operator(docs)
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert "app.kubernetes.io/version" not in selector  # a selector cannot change on upgrade
    # other release names: objects follow the release, as Helm's fullname convention
    other = chart.render(values={"fullnameOverride": "obs"})
    assert _operator(other)["metadata"]["name"] == "obs-operator"


def test_values_reach_the_operator_pod_and_its_flags() -> None:
    docs = chart.render(namespace="l7", values={
        "image": {"repository": "reg.example/l7scope", "tag": "9.9", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "reg-creds"}],
        "operator": {"nodeSelector": {"pool": "system"}, "priorityClassName": "system-cluster-critical",
                     "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
                     "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
                     "certManagerIssuer": "ClusterIssuer/corp", "logLevel": "debug"}})
    pod = _operator(docs)["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "reg-creds"}]
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["tolerations"] == [{"effect": "NoSchedule", "key": "dedicated", "operator": "Exists"}]
    c = pod["containers"][0]
    assert c["image"] == "reg.example/l7scope:9.9" and c["imagePullPolicy"] == "Always"
    # maps merge with the chart's defaults (Helm's coalescing): the default limits stay
    assert c["resources"] == {"requests": {"cpu": "10m", "memory": "64Mi"},
                              "limits": {"cpu": "500m", "memory": "512Mi"}}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True  # the defaults stay
    cmd = c["command"]
    assert cmd[:4] == ["l7scope", "--log-level", "debug", "operator"]
    # the real `l7scope operator` command parses them: what it renders gets the same image
    params = operator_command.make_context("operator", cmd[4:]).params
    assert params["namespace"] == "l7" and params["image"] == "reg.example/l7scope:9.9"
    assert params["image_pull_policy"] == "Always"
    assert params["image_pull_secrets"] == ("reg-creds",)
    assert params["cert_manager_issuer"] == "ClusterIssuer/corp"
    ctx = render.RenderContext(namespace="l7", image=params["image"],
                               image_pull_secrets=params["image_pull_secrets"])
    al = check("tigera-secure", {"logCollection": {"collectLogs": "Enabled"}}).spec
    assert al is not None
    pods = [o["spec"]["template"]["spec"] for o in render.render(al, ctx)
            if o["kind"] in ("DaemonSet", "StatefulSet", "Deployment")]
    assert len(pods) == 2
    assert all(p["imagePullSecrets"] == [{"name": "reg-creds"}] for p in pods)


def test_chart_values_default_to_today_s_objects() -> None:
    """The defaults render what the chart rendered before it had helpers: the operator's
    flags, resources and least-privilege contexts, empty LogStorage and NodeAgentConfiguration."""
    docs = chart.render()
    c = _operator(docs)["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["l7scope", "--log-level", "info", "operator", "--in-cluster",
                            "--namespace", "l7scope-system", "--image", "ghcr.io/l7scope/l7scope:0.1.0",
                            "--image-pull-policy", "IfNotPresent", "--liveness", "0.0.0.0:8081"]
    assert c["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"},
                              "limits": {"cpu": "500m", "memory": "512Mi"}}
    pod = _operator(docs)["spec"]["template"]["spec"]
    assert not {"imagePullSecrets", "nodeSelector", "tolerations", "affinity", "priorityClassName"} & set(pod)
    assert [d["spec"] for d in docs if d["kind"] in ("LogStorage", "NodeAgentConfiguration")] == [{}, {}]
    ls = next(d for d in chart.render(values={"logStorage": {"engine": "clickhouse",
                                                              "server": {"replicas": 2}}})
              if d["kind"] == "LogStorage")
    assert ls["spec"] == {"engine": "clickhouse", "server": {"replicas": 2}}


def test_define_precedence_follows_helm_parse_order(tmp_path: Path) -> None:
    """Helm parses deeper files first, then names descending: a later `define` wins, so the
    top-level file and, among those, the first by name has the last word."""
    c = _chart(tmp_path, {
        "Chart.yaml": "apiVersion: v2\nname: p\nversion: 0.1.0\n",
        "templates/sub/_deep.tpl": '{{ define "who" }}deep{{ end }}{{ define "only" }}sub{{ end }}',
        "templates/_b.tpl": '{{ define "who" }}b{{ end }}',
        "templates/_a.tpl": '{{ define "who" }}a{{ end }}',
        "templates/cm.yaml": 'kind: ConfigMap\ndata: {who: {{ include "who" . }}, only: {{ include "only" . }}}\n',
    })
    r = _run(c)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "---\n# Source: p/templates/cm.yaml\nkind: ConfigMap\ndata: {who: a, only: sub}\n"
