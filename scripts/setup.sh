#!/usr/bin/env bash
# Create .venv and install refload with pinned versions (constraints.txt).
# Usage: scripts/setup.sh [dev]   -- "dev" adds test and lint tools.
set -euo pipefail
cd "$(dirname "$0")/.."
# pandas: the shipped dim_zipcode table has a python_transform hook (hooks/zipcode.py).
extra="[pandas]"
[ "${1:-}" = "dev" ] && extra="[dev]"
python3 -m venv .venv
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
