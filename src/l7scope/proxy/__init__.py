"""Envoy: its bootstrap (`bootstrap`, rendered from the contracts), its binary (`binary`), its
supervision (`supervisor`), its admin endpoint (`admin`) and `l7scope envoy-config` (`cli`)."""
