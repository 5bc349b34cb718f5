#!/usr/bin/env bash
# Regenerate the lock files in requirements/ from pyproject.toml's pins: every package, direct
# and transitive, pinned to one version with the sha256 of each of its files on PyPI, so that
# `pip install --require-hashes -r requirements/<name>.lock` installs exactly these bytes.
#   requirements/demo.lock   the demo extra (scripts/setup.sh demo)
#   requirements/all.lock    every part (the Dockerfile, the test image: scripts/setup.d/images.sh)
#   requirements/test.lock   every part and the dev extra (scripts/setup.sh test)
# Run after changing a pin in pyproject.toml (tests/unit/test_lock_files.py fails until then).
# pip-tools runs from a throwaway venv; resolved for this machine's Python (3.11) on Linux.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP_TOOLS=pip-tools==7.6.2
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools/venv"
"$tools/venv/bin/pip" install -q --disable-pip-version-check "$PIP_TOOLS"
mkdir -p requirements
for spec in demo:demo all:all test:all,dev; do
  name=${spec%%:*}
  extras=()
  IFS=, read -r -a list <<<"${spec#*:}"
  for e in "${list[@]}"; do extras+=(--extra "$e"); done
  echo "locking requirements/$name.lock (${spec#*:})"
  "$tools/venv/bin/pip-compile" -q --generate-hashes --allow-unsafe --strip-extras \
    --no-emit-find-links --no-emit-index-url "${extras[@]}" \
    --output-file "requirements/$name.lock" pyproject.toml
  # The extras name l7scope itself (`l7scope[kube]`): pip-compile then lists this checkout as a
  # dependency, which has no hash; the project is installed by path after the lock.
  python3 - "requirements/$name.lock" <<'PY'
import re, sys
p = sys.argv[1]
text = open(p).read()
text = re.sub(r"# WARNING: pip install will require the following package to be hashed\.\n"
              r"# Consider using a hashable URL[^\n]*\n", "", text)
text = re.sub(r"l7scope @ file://[^\n]*\n(    # [^\n]*\n)*", "", text)
text = text.replace(" --output-file=", " --output-file=").replace(str(__import__("os").getcwd()), ".")
open(p, "w").write(text)
PY
done
