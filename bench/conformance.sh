#!/usr/bin/env bash
# Conformance and infer speed of onnxruntime and openvino against cpu (see bench/conformance.py).
#
#   bench/conformance.sh [--work DIR] [--models M1,M2,...] [--batch-size N]
#
# $PYTHON (default python3) must have rbench installed with its onnx and openvino extras.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
exec "${PYTHON:-python3}" bench/conformance.py "$@"
