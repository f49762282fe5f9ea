#!/usr/bin/env bash
# The HTML site of a whole zoo: size and time to draw in headless Chromium (see bench/html_zoo.py).
# Usage: bench/html_zoo.sh [TIMM_RESULTS_DIR]   (PYTHON=... selects the interpreter; default: python)
# Without an argument, a synthetic zoo of 1,300 models; with one, timm's results/ folder.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
if [ $# -ge 1 ]; then
    exec "$python" bench/html_zoo.py --results "$1"
fi
exec "$python" bench/html_zoo.py
