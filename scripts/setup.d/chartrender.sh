#!/usr/bin/env bash
# Build tools/chartrender: the Helm chart renderer (Go's text/template + sprig, as Helm), offline
# from Debian's Go packages in GOPATH mode (Helm itself is not in Debian 12, and no offline
# package of it exists). Cached under a key hashed from its source:
#   L7SCOPE_CHARTRENDER_CACHE (default /var/cache/l7scope/chartrender, or ~/.cache/... when not root)
#   -> $L7SCOPE_CHARTRENDER_CACHE/<key>/chartrender
# l7scope.operator.chart computes the same key (sha256 of tools/chartrender/main.go, 16 hex
# digits) and runs that binary; a stale or missing one is an error naming this step.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { printf '\033[1;34m[setup chartrender]\033[0m %s\n' "$*"; }

if [ "$(id -u)" = 0 ]; then
  default_cache=/var/cache/l7scope/chartrender
else
  default_cache=${XDG_CACHE_HOME:-$HOME/.cache}/l7scope/chartrender
fi
CACHE=${L7SCOPE_CHARTRENDER_CACHE:-$default_cache}
KEY=$(sha256sum tools/chartrender/main.go | cut -c1-16)
OUT=$CACHE/$KEY/chartrender
if [ -x "$OUT" ]; then
  say "cached: $OUT"
  exit 0
fi

# The Go packages are in scripts/setup.sh's test packages: sprig 3.2.3 (Helm's template
# functions), ghodss/yaml over yaml.v2 (what Helm's sigs.k8s.io/yaml is), gojsonschema (Helm 3's
# values.schema.json check).
for lib in github.com/Masterminds/sprig github.com/ghodss/yaml gopkg.in/yaml.v2 \
           github.com/xeipuuv/gojsonschema; do
  if ! command -v go >/dev/null || [ ! -d "/usr/share/gocode/src/$lib" ]; then
    say "WARNING: Go or $lib (Debian golang-*-dev) missing; not building (the chart tests will fail, naming this step)"
    exit 0
  fi
done

mkdir -p "$CACHE"
W=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/gopath/src/l7scope.local/chartrender"
cp tools/chartrender/main.go "$W/gopath/src/l7scope.local/chartrender/"
# GOPATH mode: our tree first, then Debian's /usr/share/gocode; no network (GOPROXY=off).
export GO111MODULE=off GOPATH=$W/gopath:/usr/share/gocode GOCACHE=$CACHE/gocache GOPROXY=off \
       GOFLAGS= CGO_ENABLED=0
(cd "$W/gopath/src/l7scope.local/chartrender" && nice -n 10 go build -trimpath -o "$W/chartrender" .)
mkdir -p "$CACHE/$KEY"
mv -f "$W/chartrender" "$OUT"
# builds of older sources (other checkouts may still use recent ones): 11 MB each
find "$CACHE" -mindepth 1 -maxdepth 1 -type d -regextype posix-extended -regex '.*/[0-9a-f]{16}' \
  -mtime +14 -exec rm -rf {} +
say "built $OUT"
