"""l7scope: Layer-7 (HTTP) visibility for Kubernetes pod traffic."""

__version__ = "0.1.0"
__all__ = ["__version__"]
