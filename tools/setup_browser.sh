#!/usr/bin/env bash
# Debian's chromium for the report's browser test (tests/ray/test_report.py). Idempotent: a no-op
# when a chromium is already on PATH. Needs root and apt-get; elsewhere it says what to install.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }
fi
command -v chromium >/dev/null 2>&1 || echo "setup: install Debian's chromium package for the report's browser test" >&2
