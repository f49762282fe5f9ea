#!/usr/bin/env bash
# Metadata of the whole timm zoo: `rbench metadata -m all`, timed.
# Usage: bench/metadata.sh [OUT_DIR]   (PYTHON=... selects the interpreter; default: python)
# Prints what rbench prints, then, as its last line, `rows=<rows of model_metadata.csv> seconds=<wall time>`.
set -euo pipefail

python=${PYTHON:-python}
out=${1:-$(mktemp -d)}
start=$(date +%s.%N)
"$python" -m rbench metadata -m all --out "$out"
end=$(date +%s.%N)
rows=$(( $(wc -l < "$out/model_metadata.csv") - 1 ))  # minus the header
echo "rows=$rows seconds=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }')"
