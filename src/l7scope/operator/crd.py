"""CustomResourceDefinitions generated from the Python models, so the API server and the
operator/node agent agree on every field name and type.

- `applicationlayers.l7scope.io`: from `spec.ApplicationLayerSpec` / `ApplicationLayerStatus`;
- `logstorages.l7scope.io`: from `logstorage.LogStorageSpec` / `LogStorageStatus` (its
  cross-field rules are the operator's: `logstorage.check`);
- `nodeagentconfigurations.l7scope.io`: from `l7scope.contracts.nodeconfig.NodeSettings` (Felix's
  field names).

Pydantic's JSON schema is turned into a Kubernetes structural schema: `$ref`s inlined,
`Optional` unwrapped, `int | str` as `x-kubernetes-int-or-string`, no `additionalProperties:
false` (the API server prunes unknown fields instead) and no defaults (the operator writes the
ApplicationLayer's back; the node agent applies its own).

    python -m l7scope.operator.crd deploy/helm/l7scope/crds    # (re)write the YAML files
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from l7scope.contracts import nodeconfig
from l7scope.operator import logstorage
from l7scope.operator import spec as alspec

_KEEP = {"type", "properties", "items", "enum", "description", "minimum", "maximum", "pattern",
         "format", "additionalProperties", "required", "minLength", "maxLength", "minItems",
         "maxItems", "exclusiveMinimum", "exclusiveMaximum"}

#: fields whose Python type is looser than what users write in YAML
_NODE_OVERRIDES: dict[str, dict[str, Any]] = {
    "l7LogsFlushInterval": {
        "x-kubernetes-int-or-string": True,
        "description": "Aggregation period: a Go duration ('1s', '5m0s') or seconds. Default 1s (Felix: 5m0s).",
    },
}


def structural(schema: Mapping[str, Any], defs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A Kubernetes structural schema from one pydantic JSON schema node."""
    defs = defs if defs is not None else schema.get("$defs", {})
    node = dict(schema)
    if "$ref" in node:
        target = defs[str(node.pop("$ref")).rsplit("/", 1)[-1]]
        node = {**target, **node}
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        types = {o.get("type") for o in options}
        if len(options) == 1:
            inner = structural(options[0], defs)
            outer = {k: v for k, v in node.items() if k in _KEEP or k.startswith("x-kubernetes")}
            return {**inner, **{k: v for k, v in structural(outer, defs).items() if k != "type"}}
        if types == {"integer", "string"}:
            node["x-kubernetes-int-or-string"] = True
        else:
            raise ValueError(f"cannot express anyOf {options} in a structural schema")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes"):
            out[key] = value
        elif key not in _KEEP:
            continue
        elif key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, Mapping):
                out[key] = structural(value, defs)
        else:
            out[key] = value
    if "properties" in out:
        out.pop("additionalProperties", None)
        out.setdefault("type", "object")
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    return out


#: `kubectl get l7scope` lists every resource of the project
CATEGORY = "l7scope"


def _crd(kind: str, plural: str, spec_schema: dict[str, Any], status_schema: dict[str, Any] | None,
         columns: list[dict[str, Any]], description: str, short_names: list[str]) -> dict[str, Any]:
    props: dict[str, Any] = {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"},
        "metadata": {"type": "object"}, "spec": spec_schema,
    }
    version: dict[str, Any] = {
        "name": alspec.VERSION, "served": True, "storage": True,
        "schema": {"openAPIV3Schema": {"type": "object", "description": description,
                                       "properties": props}},
        "additionalPrinterColumns": columns,
    }
    if status_schema is not None:
        props["status"] = status_schema
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{alspec.GROUP}"},
        "spec": {
            "group": alspec.GROUP, "scope": "Cluster",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                      "listKind": f"{kind}List", "shortNames": short_names,
                      "categories": [CATEGORY]},
            "versions": [version],
        },
    }


def application_layer_crd() -> dict[str, Any]:
    spec = structural(alspec.ApplicationLayerSpec.model_json_schema(by_alias=True))
    spec["description"] = "Calico's ApplicationLayer spec fields; only logCollection and envoy act."
    status = structural(alspec.ApplicationLayerStatus.model_json_schema(by_alias=True))
    age = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    return _crd(alspec.KIND, alspec.PLURAL, spec, status, [
        {"name": "Logs", "type": "string", "jsonPath": ".spec.logCollection.collectLogs"},
        {"name": "Interval", "type": "integer", "jsonPath": ".spec.logCollection.logIntervalSeconds",
         "description": "Collector interval in seconds (logIntervalSeconds)."},
        {"name": "State", "type": "string", "jsonPath": ".status.state"},
        {"name": "Nodes Ready", "type": "string", "jsonPath": ".status.nodesReady",
         "description": "l7-log-collector pods available / nodes it should run on."}, age],
        "L7 log collection for the cluster (the one object must be named tigera-secure).",
        ["l7al"])


def node_agent_configuration_crd() -> dict[str, Any]:
    schema = nodeconfig.NodeSettings.model_json_schema(by_alias=True)
    for name, override in _NODE_OVERRIDES.items():
        schema["properties"][name] = override
    spec = structural(schema)
    spec["description"] = "FelixConfiguration's L7 fields, same names and values (docs/node.md)."
    age = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    return _crd(nodeconfig.KIND, nodeconfig.PLURAL, spec, None, [
        {"name": "TproxyMode", "type": "string", "jsonPath": ".spec.tproxyMode"},
        {"name": "PolicySyncPathPrefix", "type": "string", "jsonPath": ".spec.policySyncPathPrefix"},
        age],
        "Node agent settings, read live by every node agent (one object named default).",
        ["l7nac"])


def log_storage_crd() -> dict[str, Any]:
    spec = structural(logstorage.LogStorageSpec.model_json_schema(by_alias=True))
    spec["description"] = "Where the server keeps the L7 logs (docs/server.md, \"In a cluster\")."
    status = structural(logstorage.LogStorageStatus.model_json_schema(by_alias=True))
    age = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    return _crd(logstorage.KIND, logstorage.PLURAL, spec, status, [
        {"name": "Engine", "type": "string", "jsonPath": ".spec.engine"},
        {"name": "State", "type": "string", "jsonPath": ".status.state"}, age],
        "The server's store for the cluster (the one object must be named default).",
        ["l7ls"])


def all_crds() -> list[dict[str, Any]]:
    return [application_layer_crd(), node_agent_configuration_crd(), log_storage_crd()]


def crd_yaml(crd: Mapping[str, Any]) -> str:
    header = "# Generated by `python -m l7scope.operator.crd` from the Python models; do not edit.\n"
    return header + yaml.safe_dump(dict(crd), sort_keys=False, width=100)


def file_name(crd: Mapping[str, Any]) -> str:
    return f"{crd['metadata']['name']}.yaml"


def write(directory: str | Path) -> list[Path]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    written = []
    for crd in all_crds():
        p = d / file_name(crd)
        p.write_text(crd_yaml(crd))
        written.append(p)
    return written


if __name__ == "__main__":
    for target in sys.argv[1:] or ["deploy/helm/l7scope/crds"]:
        for path in write(target):
            print(path)
