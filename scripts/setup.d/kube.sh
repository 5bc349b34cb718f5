#!/usr/bin/env bash
# Build the test control plane once: kube-apiserver, kube-controller-manager and kube-scheduler
# v1.20.2 from Debian's `kubernetes` source package, with Debian's Go, offline; and, for the
# real test node of tests/cluster, kubelet and kube-proxy from the same tree.
#
# The binaries land in a cache dir that survives between runs on the same machine and the build
# is skipped when they are already there; only the missing ones are built, all in one `make`
# (they share most compiled packages: five together take ~9 min cold, three ~4.5 min, the
# two node binaries alone ~7.5 min):
#   L7SCOPE_KUBE_CACHE  (default /var/cache/l7scope/kube-v1.20.2, or ~/.cache/... when not root)
#   -> $L7SCOPE_KUBE_CACHE/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kube-proxy}
# tests/kube/ and tests/cluster/ look in the same place (tests/kube/kubeharness.py).
#
# Apt is used through a private sources/lists/cache dir, so /etc/apt and the machine's package
# cache are never touched. Set L7SCOPE_SKIP_KUBE_BUILD=1 to skip (the kube tests then skip).
# Facts behind the recipe: the vendored modern-go/reflect2 v1.0.1 crashes under Go >= 1.18 on the
# first custom-resource create, so it is replaced by Debian's reflect2 1.0.2; 1.20 builds in
# GOPATH mode through its own `make` (which also generates the openapi code) and needs rsync.
set -euo pipefail

say() { printf '\033[1;34m[setup kube]\033[0m %s\n' "$*"; }

VERSION=v1.20.2
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
if [ "$(id -u)" = 0 ]; then
  default_cache=/var/cache/l7scope/kube-$VERSION
else
  default_cache=${XDG_CACHE_HOME:-$HOME/.cache}/l7scope/kube-$VERSION
fi
CACHE=${L7SCOPE_KUBE_CACHE:-$default_cache}
BIN=$CACHE/bin

# The binaries still to build (none: all cached and of the right version).
missing() {
  local b
  for b in "${BINARIES[@]}"; do
    if [ ! -x "$BIN/$b" ] || ! "$BIN/$b" --version 2>/dev/null | grep -q "$VERSION"; then
      printf '%s ' "$b"
    fi
  done
}

if [ "${L7SCOPE_SKIP_KUBE_BUILD:-0}" = 1 ]; then
  say "skipped (L7SCOPE_SKIP_KUBE_BUILD=1)"
  exit 0
fi
if [ -z "$(missing)" ]; then
  say "kube $VERSION binaries cached in $BIN"
  exit 0
fi
for tool in go make rsync apt-get dpkg-deb tar; do
  if ! command -v "$tool" >/dev/null; then
    say "WARNING: '$tool' missing; not building the test control plane (kube tests will skip)"
    exit 0
  fi
done

mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"
if ! flock -n 9; then
  say "another build holds $CACHE/.build.lock; waiting for it"
  flock 9
  if [ -z "$(missing)" ]; then
    say "kube $VERSION binaries cached in $BIN"
    exit 0
  fi
fi
read -r -a TODO <<<"$(missing)"

W=$CACHE/work
mkdir -p "$W/apt/lists/partial" "$W/apt/cache/archives/partial" "$W/dl" "$W/gopath/src/k8s.io"
start=$(date +%s)
say "building ${TODO[*]} $VERSION (several CPU-minutes, once)"

# 1. Sources through a private apt configuration (same mirror as the machine's own sources).
MIRROR=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$MIRROR" ] && [ -f /etc/apt/sources.list ]; then
  MIRROR=$(awk '$1=="deb"{for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)
fi
MIRROR=${MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
{
  printf 'deb [signed-by=%s] %s bookworm main\n' "$KEYRING" "$MIRROR"
  printf 'deb-src [signed-by=%s] %s bookworm main\n' "$KEYRING" "$MIRROR"
} > "$W/apt/sources.list"
APT=(apt-get -q
  -o "Dir::Etc::SourceList=$W/apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$W/apt/lists" -o "Dir::Cache=$W/apt/cache"
  -o "Dir::State::status=/var/lib/dpkg/status" -o "APT::Sandbox::User=root")
cd "$W/dl"
if ! ls kubernetes_*.orig.tar.gz >/dev/null 2>&1 || ! ls golang-github-modern-go-reflect2-dev_*.deb >/dev/null 2>&1; then
  "${APT[@]}" update >/dev/null
  ls kubernetes_*.orig.tar.gz >/dev/null 2>&1 || "${APT[@]}" source --download-only kubernetes >/dev/null
  ls golang-github-modern-go-reflect2-dev_*.deb >/dev/null 2>&1 || "${APT[@]}" download golang-github-modern-go-reflect2-dev >/dev/null
fi

# 2. Unpack the tree and swap in reflect2 1.0.2.
SRC=$W/kubernetes-1.20.2
if [ ! -f "$SRC/.l7scope-prepared" ]; then
  rm -rf "$SRC" "$W/r2"
  tar -C "$W" -xzf "$W"/dl/kubernetes_*.orig.tar.gz
  [ -d "$SRC/cmd/kube-apiserver" ] || { echo "unexpected source layout in $W" >&2; exit 1; }
  dpkg-deb -x "$W"/dl/golang-github-modern-go-reflect2-dev_*.deb "$W/r2"
  R2=$SRC/vendor/github.com/modern-go/reflect2
  rm -f "$R2"/*.go "$R2"/*.s
  cp "$W"/r2/usr/share/gocode/src/github.com/modern-go/reflect2/*.go \
     "$W"/r2/usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$R2"/
  rm -f "$R2"/*_test.go
  touch "$SRC/.l7scope-prepared"
fi

# 3. Build (GOPATH mode, offline), gently: other work shares the CPU.
ln -sfn "$SRC" "$W/gopath/src/k8s.io/kubernetes"
cd "$W/gopath/src/k8s.io/kubernetes"
export GOPATH=$W/gopath GOCACHE=$W/gocache GOPROXY=off GOFLAGS= CGO_ENABLED=0 KUBE_GIT_VERSION=$VERSION
whats=""
for b in "${TODO[@]}"; do whats="$whats cmd/$b"; done
nice -n 10 make WHAT="${whats# }" >"$W/build.log" 2>&1 || {
  tail -n 40 "$W/build.log" >&2
  say "build FAILED; full log: $W/build.log"
  exit 1
}

mkdir -p "$BIN"
for b in "${TODO[@]}"; do
  install -m 0755 "$SRC/_output/bin/$b" "$BIN/.$b.new"
  mv -f "$BIN/.$b.new" "$BIN/$b"
done
[ -z "$(missing)" ] || { say "built binaries do not report $VERSION: $(missing)"; exit 1; }
# The 1.8 GB work tree is not needed any more; the downloads are kept for a rebuild.
rm -rf "$SRC" "$W/gopath" "$W/gocache" "$W/r2"
say "done in $(( $(date +%s) - start )) s: $BIN"
