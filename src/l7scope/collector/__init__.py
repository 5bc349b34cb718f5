"""The collector: tail Envoy's access log (and receive its gRPC Access Log Service), batch the
requests per interval and report them to the node agent over the Policy Sync API."""
