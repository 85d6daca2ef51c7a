#!/usr/bin/env bash
# Set up (with dev tools), start what the tests need, then lint, type-check and test.
# --quick: the inner loop: lint, types and every test but the Spark and browser ones
# (pytest markers `spark`, `browser`); .ci/run runs everything. Other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=""
if [ "${1:-}" = "--quick" ]; then
  quick=1
  shift
fi
scripts/setup.sh dev
scripts/start_postgres.sh
if [ -n "$quick" ]; then
  .venv/bin/ruff check .
  .venv/bin/ruff format --check .
  .venv/bin/mypy
  exec .venv/bin/python -m pytest -m "not spark and not browser" "$@"
fi
scripts/install_chromium.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# The shipped configs, as a team's config repository checks its own before uploading.
.venv/bin/python -m handler check configs
# The deployment files, checked by the tools AWS users check them with.
.venv/bin/statelint statemachine.asl.json
[ -x .tools/node_modules/.bin/asl-validator ] ||
  npm install --prefix .tools --no-save --no-audit --no-fund --silent asl-validator@4.0.0
.tools/node_modules/.bin/asl-validator --json-path statemachine.asl.json
.venv/bin/cfn-lint template.yaml
# The image: every runtime package has a binary wheel for its base (OS, CPU, Python).
.venv/bin/python scripts/check_wheels.py
.venv/bin/python -m pytest "$@"
