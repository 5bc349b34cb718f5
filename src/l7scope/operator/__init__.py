"""The ApplicationLayer operator: `spec` (the resource model, validation, defaults), `render`
(the manifests it creates), `status`, `nodeconfig` (the operator's patch of the node-agent
configuration resource, named in `contracts/nodeconfig.py`), `crd` (CRDs generated from the
models), `reconcile` (what it does) and `handlers` (kopf wiring; with `cli`, which runs kopf, the
only modules importing kopf)."""
