"""The ApplicationLayer operator: `spec` (the resource model, validation, defaults), `render`
(the manifests it creates), `status`, `nodeconfig` (the node-agent configuration resource),
`crd` (CRDs generated from the models), `reconcile` (what it does) and `handlers` (kopf wiring;
the only module importing kopf)."""
