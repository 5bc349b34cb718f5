"""Envoy: its configuration (rendered from the contracts), its binary and its supervision."""
