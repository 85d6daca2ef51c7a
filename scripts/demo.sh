#!/usr/bin/env bash
# Set up, then load the four shipped sample tables into ./refload.duckdb and print a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python scripts/run_samples.py "$@"
