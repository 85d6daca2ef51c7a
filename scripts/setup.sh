#!/usr/bin/env bash
# Create .venv and install refload with pinned versions (constraints.txt).
# Usage: scripts/setup.sh [dev]   -- "dev" adds test and lint tools.
set -euo pipefail
cd "$(dirname "$0")/.."
# pandas: the shipped dim_zipcode table has a python_transform hook (hooks/zipcode.py).
extra="[pandas]"
[ "${1:-}" = "dev" ] && extra="[dev]"
# The tests run on the image's Python (3.12), built by install_python.sh when the machine has
# none. The demo takes a 3.12 that is already there, else the machine's python3 (3.11 or newer).
if [ "${1:-}" = "dev" ]; then
  python=$(scripts/install_python.sh)
elif [ -x .tools/python3.12/bin/python3.12 ]; then
  python=.tools/python3.12/bin/python3.12
else
  python=$(command -v python3.12 || command -v python3) || { echo "refload needs python3" >&2; exit 1; }
fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  { echo "refload needs Python 3.11 or newer; $python is $("$python" -V 2>&1)" >&2; exit 1; }
# A .venv made by another Python (e.g. before the tests moved to 3.12) is made anew.
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ -e .venv/bin/python ] && [ ! -d ".venv/lib/python$version" ] && rm -rf .venv
"$python" -m venv .venv
stamp=".venv/.refload-installed${extra}"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -qq --upgrade pip
  .venv/bin/python -m pip install -qq -c constraints.txt -e ".${extra}"
  echo "$want" > "$stamp"
fi
# The Spark engine's tests run PySpark in local mode, which needs a Java 17 (or 21) runtime.
if [ "${1:-}" = "dev" ] && ! command -v java >/dev/null; then
  echo "installing Java 17 for PySpark" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi
