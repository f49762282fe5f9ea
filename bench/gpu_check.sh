#!/usr/bin/env bash
# Every GPU claim of rbench, checked in one command on one GPU machine (issue 12).
#
#   bench/gpu_check.sh [--dry-run] [--only STEP,...] [--deadline SECONDS] [--timm PATH] RESULTS_DIR
#
# Steps, in this order, each with its log RESULTS_DIR/<step>.log:
#   install     polars (and corrupt-tta) from the wheels in .whl/ into a private folder put on
#               PYTHONPATH, rbench itself (pip install -e . without network or build isolation)
#   tests       the oracle, ImageNet fixture, accuracy, input-cache and backend tests
#   logits      bench/logits_check.py: cpu logits against cuda, cuda-amp, cuda-amp-bf16, with
#               +channels-last and +compile, on the synthetic JPEG data set
#   oom         vit_large_patch16_224 train at batch 8192 (random weights): backs off, peak memory
#   resume      a GPU grid killed with kill -9 mid-run and resumed, against an uninterrupted run
#   validate    bench/validate_speed.sh --device cuda (resnet50, cuda-amp+channels-last, 16 workers)
#   latency     bench/latency.sh --device cuda: resnet50 batch-1 latency percentiles, its mean-based
#               samples/s against timm's benchmark.py, and the NVML telemetry columns of each row
#   throughput  bench/throughput.sh --device cuda against timm's benchmark.py (PATH, default
#               .whl/timm_benchmark.py: fetched, never committed); $GPU_CHECK_THROUGHPUT_MODELS
#               (M1,M2,...) replaces its six models, for a call with less time
# then RESULTS_DIR/summary.txt: each target met or missed, also printed last.
#
# Time: every step runs under `timeout` (its own limit, and never past the deadline, default
# 470 s from the start, so the whole run ends within 8 minutes); throughput, the longest, goes
# last and gets what is left; when stopped early its report covers the sweeps it finished.
# --only runs the named steps (install always runs first), e.g. `--only install,throughput`.
#
# --dry-run: the same steps on the CPU with tiny settings (test_vit and friends, random weights,
# cpu stacks in place of cuda ones, throughput.sh --device cpu on one model, the out-of-memory
# case under a data-size ulimit), to check the script here; GPU-only targets are marked n/a.
# $PYTHON (default python3) is the interpreter with torch and timm. Exit status 0 when no
# target was missed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
repo=$PWD

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# --step NAME RESULTS_DIR: one step, run by the main script below under `timeout`.
if [ "${1:-}" = "--step" ]; then
    step=$2 R=$3
    PY=${PYTHON:-python3}
    dry() { [ "$GPU_CHECK_MODE" = dry-run ]; }
    case "$step" in
    install)
        # The wheels: setuptools (rbench's build backend) into a folder used by the build alone,
        # the others (polars, its runtime, corrupt-tta) into the folder on PYTHONPATH.
        install_wheels() {  # target wheels...
            local target=$1; shift
            [ $# -gt 0 ] || return 0
            echo "installing $* into $target"
            "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$target" "$@" \
                || echo "wheel install failed"
        }
        shopt -s nullglob
        build_wheels=(.whl/setuptools-*.whl) wheels=()
        for w in .whl/*.whl; do [[ $w == .whl/setuptools-* ]] || wheels+=("$w"); done
        [ ${#build_wheels[@]} -gt 0 ] || [ ${#wheels[@]} -gt 0 ] || echo "no wheels in .whl/: using what $PY has"
        install_wheels "$GPU_CHECK_SITE" "${wheels[@]}"
        install_wheels "$GPU_CHECK_WORK/build-tools" "${build_wheels[@]}"
        offline() { PYTHONPATH=$GPU_CHECK_WORK/build-tools:$PYTHONPATH "$PY" -m pip "$@" --no-index --no-deps --no-build-isolation; }
        # rbench: an editable install, unless this checkout is already what `import rbench` finds.
        here=$("$PY" -c 'import os, rbench; print(os.path.dirname(os.path.realpath(rbench.__file__)))' 2>/dev/null)
        if [ "$here" = "$(realpath core)" ]; then
            echo "rbench is already installed from this checkout ($here)"
        else
            offline install -q -e . || offline install -q --target "$GPU_CHECK_SITE" . || echo "rbench install failed"
        fi
        # The offline build itself, also where rbench was already installed.
        if offline wheel -q -w "$GPU_CHECK_WORK/wheel" . > /dev/null; then
            echo "build=ok"
        else
            echo "build=failed"
        fi
        "$PY" - <<'EOF' 2>&1 | tee "$R/environment.txt"
import os, platform, subprocess
def version(name):
    try:
        module = __import__(name)
        return f"{module.__version__} ({os.path.dirname(module.__file__)})"
    except Exception as exc:  # noqa: BLE001
        return f"- ({type(exc).__name__}: {exc})"
import torch, timm
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), timm {timm.__version__}, "
      f"{os.cpu_count()} CPUs")
print(f"polars {version('polars')}")
print(f"rbench {version('rbench')}")
if torch.cuda.is_available():
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    print(f"GPU: {smi or torch.cuda.get_device_name()}")
else:
    print("GPU: none (torch sees no CUDA device)")
EOF
        "$PY" - <<'EOF'
import polars, rbench
from rbench.worker.backends import resolve_stack
from rbench.registry import get_registry
try:
    resolve_stack("cuda-amp+channels-last+compile", get_registry())
    cuda = "yes"
except Exception as exc:  # noqa: BLE001
    print(f"cuda-amp+channels-last+compile: {exc}")
    cuda = "no"
print(f"polars={polars.__version__} rbench={rbench.__version__} cuda={cuda}")
EOF
        ;;
    tests)
        "$PY" -m pytest -q -p no:cacheprovider tests/test_oracle.py tests/test_imagenet.py tests/test_imagenet_c.py \
            tests/test_accuracy.py tests/test_input_cache.py tests/test_backends.py tests/test_telemetry.py
        ;;
    logits)
        if dry; then
            "$PY" bench/logits_check.py --models test_vit,test_efficientnet --reference cpu --workers 2 \
                --stacks cpu+channels-last,cpu-amp-bf16,cpu-amp-bf16+channels-last,cpu+compile
        else
            "$PY" bench/logits_check.py --models resnet18,vit_small_patch16_224 --reference cpu --workers 8 \
                --batch-size 50 --stacks cuda,cuda+channels-last,cuda-amp,cuda-amp+channels-last,cuda-amp-bf16,cuda-amp-bf16+channels-last,cuda-amp+channels-last+compile
        fi
        ;;
    oom)
        common=(--bench train --weights random --warmup-steps 2 --bench-steps 3 --bench-seconds 0 --out "$R/oom")
        if dry; then
            # No allocator limit on a CPU: a data-size ulimit stands in for the device's memory.
            (ulimit -d 1500000 && "$PY" -m rbench run -m test_vit -b cpu --batch-size 1024 "${common[@]}")
        else
            "$PY" -m rbench run -m vit_large_patch16_224 -b cuda-amp --batch-size 8192 "${common[@]}"
        fi
        "$PY" bench/gpu_check.py oom "$R/oom"
        ;;
    resume)
        if dry; then
            grid=(-m test_vit,test_efficientnet -b cpu,cpu+channels-last --workers 2)
        else
            grid=(-m test_vit,test_efficientnet,test_byobnet,test_convnext -b cuda-amp,cuda-amp+channels-last --workers 8)
        fi
        grid+=(--bench validate,infer --weights random --batch-size 32 --warmup-steps 2 --bench-steps 5 --bench-seconds 0)
        # Every stack validates and benchmarks: models x stacks x 2 cells.
        cells=$(( $(tr ',' '\n' <<< "${grid[1]}" | wc -l) * 2 * $(tr ',' '\n' <<< "${grid[3]}" | wc -l) ))
        echo "== uninterrupted run ($cells cells)"
        "$PY" -m rbench run "${grid[@]}" --out "$R/resume/full" > "$R/resume-full.log" 2>&1 \
            || { echo "the uninterrupted run failed, see resume-full.log"; exit 1; }
        echo "== the same grid, killed with -9 once a third of its cells are stored"
        setsid "$PY" -m rbench run "${grid[@]}" --out "$R/resume/killed" > "$R/resume-killed.log" 2>&1 &
        pid=$!
        # It runs in its own session, where a step timeout would not reach it.
        trap 'kill -9 -- "-$pid" 2>/dev/null' EXIT
        trap 'exit 143' TERM INT
        records="$R/resume/killed/store/records"
        while kill -0 "$pid" 2>/dev/null; do
            done_now=$(find "$records" -name '*.json' 2>/dev/null | wc -l)
            [ "$done_now" -ge $(( (cells + 2) / 3 )) ] && break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 -- "-$pid"
            killed_mid_run=yes
        else
            killed_mid_run=no
        fi
        wait "$pid" 2>/dev/null
        trap - EXIT TERM INT
        done_at_kill=$(find "$records" -name '*.json' 2>/dev/null | wc -l)
        echo "killed_mid_run=$killed_mid_run done_at_kill=$done_at_kill cells=$cells"
        "$PY" -m rbench status --store "$R/resume/killed/store"
        echo "== resumed"
        "$PY" -m rbench run "${grid[@]}" --out "$R/resume/killed" > "$R/resume-resumed.log" 2>&1 \
            || { echo "the resumed run failed, see resume-resumed.log"; exit 1; }
        grep "cell(s) to run" "$R/resume-resumed.log"
        "$PY" bench/gpu_check.py compare "$R/resume/full" "$R/resume/killed"
        ;;
    validate)
        if dry; then
            bench/validate_speed.sh --device cpu --images 400 --repeats 1 --workers 2
        else
            bench/validate_speed.sh --device cuda --images 10000 --repeats 2
        fi
        ;;
    latency)
        if dry; then
            bench/latency.sh --device cpu --models test_vit --queries 64 --seconds 1 --timm "$GPU_CHECK_TIMM" \
                --work "$R/latency"
        else
            bench/latency.sh --device cuda --timm "$GPU_CHECK_TIMM" --work "$R/latency"
        fi
        "$PY" bench/gpu_check.py telemetry "$R/latency"
        ;;
    throughput)
        if dry; then
            bench/throughput.sh --timm "$GPU_CHECK_TIMM" --device cpu --models test_vit --work "$R/throughput"
        else
            bench/throughput.sh --timm "$GPU_CHECK_TIMM" --device cuda --work "$R/throughput" \
                ${GPU_CHECK_THROUGHPUT_MODELS:+--models "$GPU_CHECK_THROUGHPUT_MODELS"}
        fi
        ;;
    *) echo "gpu_check.sh: no step $step" >&2; exit 2 ;;
    esac
    exit
fi

mode=gpu only="" deadline="" timm=.whl/timm_benchmark.py R=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) mode=dry-run; shift ;;
        --only) only=${2:-}; shift 2 || usage ;;
        --deadline) deadline=${2:-}; shift 2 || usage ;;
        --timm) timm=${2:-}; shift 2 || usage ;;
        -*) usage ;;
        *) [ -z "$R" ] || usage; R=$1; shift ;;
    esac
done
[ -n "$R" ] || usage
mkdir -p "$R" && R=$(realpath "$R") || exit 2
[ -z "$(ls -A "$R")" ] || { echo "gpu_check.sh: $R must be a new or empty folder" >&2; exit 2; }
[ -f "$timm" ] && timm=$(realpath "$timm")
# Per step: its limit in seconds (GPU run, dry run). The deadline bounds them all.
declare -A limit_gpu=([install]=60 [tests]=150 [logits]=120 [oom]=90 [resume]=150 [validate]=150 [latency]=150 [throughput]=600)
declare -A limit_dry=([install]=300 [tests]=600 [logits]=400 [oom]=200 [resume]=400 [validate]=300 [latency]=400 [throughput]=500)
order=(install tests logits oom resume validate latency throughput)
if [ $mode = dry-run ]; then deadline=${deadline:-2700}; else deadline=${deadline:-470}; fi

work=$(mktemp -d "${TMPDIR:-/tmp}/rbench-gpu-check.XXXXXX")
export GPU_CHECK_MODE=$mode GPU_CHECK_SITE=$work/site GPU_CHECK_WORK=$work GPU_CHECK_TIMM=$timm
export PYTHONPATH=$work/site${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 COLUMNS=${COLUMNS:-160}
export RBENCH_CACHE_DIR=$work/cache  # a fresh cache: synthetic data, decoded inputs
echo "$mode" > "$R/mode.txt"
start=$SECONDS
echo "gpu_check ($mode): results in $R, deadline ${deadline} s, work folder $work"

for step in "${order[@]}"; do
    if [ -n "$only" ] && [ "$step" != install ] && [[ ",$only," != *",$step,"* ]]; then continue; fi
    if [ $mode = dry-run ]; then cap=${limit_dry[$step]}; else cap=${limit_gpu[$step]}; fi
    left=$(( deadline - (SECONDS - start) ))
    [ "$cap" -gt "$left" ] && cap=$left
    if [ "$cap" -lt 10 ]; then
        echo "== $step: skipped, no time left before the deadline"
        printf '%s\t%s\t%s\t%s\n' "$step" 124 0 "$cap" >> "$R/steps.tsv"
        echo "skipped: no time left before the deadline" > "$R/$step.log"
        continue
    fi
    echo "== $step (at most $cap s)"
    t0=$EPOCHREALTIME
    timeout -k 10 "$cap" "$repo/bench/gpu_check.sh" --step "$step" "$R" > "$R/$step.log" 2>&1
    rc=$?
    seconds=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    printf '%s\t%s\t%s\t%s\n' "$step" "$rc" "$seconds" "$cap" >> "$R/steps.tsv"
    if [ "$step" = throughput ] && [ -d "$R/throughput" ] && [ $rc -ne 0 ]; then
        echo "(stopped with status $rc: the report of the sweeps it finished)" >> "$R/$step.log"
        bench/throughput.sh --report --work "$R/throughput" >> "$R/$step.log" 2>&1
    fi
    echo "   status $rc after $seconds s; last line: $(tail -n 1 "$R/$step.log" | cut -c1-150)"
done

echo
"${PYTHON:-python3}" bench/gpu_check.py summary "$R"
status=$?
rm -rf "$work"
exit $status
