#!/usr/bin/env bash
# ImageNet-C build speed (images/s per core) and a warm model pass over the made JPEGs.
#
#   bench/imagenet_c_build.sh [--images N] [--severities 1,3] [--processes P] [--model NAME] ...
#
# Makes (once, under the system temp folder) a val-like folder of textured JPEGs in real wnid
# folders, then times each of the 15 corruptions on one core (JPEG-85 encoding included), the
# build (`imagenet_c.build`) in 1 and in P processes, the build as the cells make it
# (`make_slices`: one node of P and of P/2 processes, and two builders of P/2 sharing one
# folder, as two nodes; --repeats rounds, the best), and a model's cold and warm passes over
# the made JPEGs through rbench's loader and decoded-input cache. Options go to
# bench/imagenet_c_build.py; $PYTHON (default python3) must have rbench[corruptions].
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
exec "$PYTHON" bench/imagenet_c_build.py "$@"
