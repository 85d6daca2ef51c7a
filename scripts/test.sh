#!/usr/bin/env bash
# Set up (with dev tools), start what the tests need, then lint, type-check and test.
# --quick: the inner loop: lint, types and the tests on DuckDB and PostgreSQL but the Spark,
# browser, dbt, Redshift-proxy and slow ones (pytest markers `spark`, `browser`, `dbt`,
# `redshift`, `slow`); .ci/run runs everything. Other arguments go to pytest. Both run on
# every core (pytest-xdist): each worker has its own PostgreSQL database and folders, and one
# worker takes each slow group (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
# Bytecode caches on, whatever the machine's default: each pytest worker and each
# `python -m handler` a test starts would otherwise compile refload (and rewrite the tests)
# from source again.
unset PYTHONDONTWRITEBYTECODE
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
  exec .venv/bin/python -m pytest -n auto --dist loadgroup \
    -m "not spark and not browser and not dbt and not redshift and not slow" "$@"
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
# dbt for tests/test_dbt_sources.py, in a venv of its own: its pins are not ours. 1.11: 1.12
# downloads a parser at install time. DuckDB as ours, so both read the same file.
[ -x .tools/dbt-venv/bin/dbt ] || {
  .venv/bin/python -m venv .tools/dbt-venv
  .tools/dbt-venv/bin/pip install -q dbt-core==1.11.16 dbt-duckdb==1.11.1 dbt-postgres==1.11.0 \
    "$(grep -i '^duckdb==' constraints.txt)"
}
# The documentation site, its reference pages generated first (scripts/mkdocs_hooks.py).
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet
.venv/bin/cfn-lint template.yaml
.venv/bin/python scripts/lint_template.py
# The image: every runtime package has a binary wheel for its base (OS, CPU, Python).
.venv/bin/python scripts/check_wheels.py
# The tests run on the image's Python; where setup could not build it, say so, loudly.
image_python=()
if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  echo "WARNING: the tests run on $(.venv/bin/python -V), not the image's Python 3.12" >&2
  image_python=(--deselect tests/test_deployment.py::test_the_tests_run_on_the_images_python)
fi
.venv/bin/python -m pytest -n auto --dist loadgroup "${image_python[@]}" "$@"
