#!/usr/bin/env bash
# Headless Chromium from Debian's packages (installed only when missing): tests/test_status.py
# renders the status page in it (--dump-dom, --screenshot). Needs root, as start_postgres.sh.
set -euo pipefail
command -v chromium >/dev/null && exit 0
echo "installing chromium" >&2
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
