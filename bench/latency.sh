#!/usr/bin/env bash
# Batch-1 latency percentiles, and timm-comparable throughput beside rbench's median figure.
#
#   bench/latency.sh [--device cpu|cuda] [--timm PATH] [other options of bench/latency.py]
#
# Runs `rbench run --bench latency` (batch 1, one query at a time: mean, p50, p90, p99, samples/s)
# and `rbench run --bench infer --bench-repeats 3` (rbench's samples/s over the median step,
# timm's over the mean step, each repeat's and their spread), and with --timm PATH (timm's
# benchmark.py, fetched from github.com/huggingface/pytorch-image-models, never committed) timm's
# own samples/s over as many runs of the same batch and steps. Prints both tables, and last:
#
#   mean_vs_timm=<x> median_vs_timm=<y>
#
# --device cpu (default): test_vit and resnet18, 256 queries and 5 s, throughput at batch 8 with
# 3 warm-up and 10 timed steps, on one intra-op thread (OMP_NUM_THREADS, unless set), as
# bench/throughput.sh: threads that wait for each other at every op turn a shared machine's load
# into tenfold swings. --device cuda: resnet50 on cuda-amp+channels-last, 1024 queries and 10 s
# (the defaults of --bench latency), throughput at batch 256 with 10 warm-up and 40 timed steps.
# $PYTHON (default python3) must have rbench, timm and torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
device=cpu
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device=$2; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
if [ "$device" = cuda ]; then
    exec "$PYTHON" bench/latency.py --device cuda --models resnet50 --queries 1024 --seconds 10 \
        --batch-size 256 --warmup 10 --steps 40 "${args[@]}"
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "$PYTHON" bench/latency.py --device cpu "${args[@]}"
