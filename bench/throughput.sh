#!/usr/bin/env bash
# rbench against timm's benchmark.py: the same models, batch and settings, interleaved sweeps.
#
#   bench/throughput.sh --timm PATH [--device cuda|cpu] [--models M1,M2,...] [--rounds N] [--work DIR] [--report]
#
# PATH is timm's benchmark.py, fetched from github.com/huggingface/pytorch-image-models (it is
# not part of this repository). $PYTHON (default python3) must have rbench, timm and torch.
#
# Each setting (precision and layout) is N rounds of one sweep per tool over the model list,
# one process each, run as the tool is meant to be run on a list (rbench -m @FILE,
# benchmark.py --model-list FILE), the tools taking turns to go first (rbench, timm; timm,
# rbench; ...), so that a drift of the machine's speed falls on both. Settings match: the same
# batch, warm-up and timed steps, one timed loop each (rbench --bench-repeats 1, as timm's one
# loop). Prints per model each tool's median over the rounds of timm's statistic (samples of
# the timed loop over its time; `infer_samples_per_sec` in both tools' files), the median of
# the rounds' rbench/timm ratios (each round's pair ran back to back), every round's figure
# and rbench's median-based figure; the wall time of each sweep; the compiled-versus-eager
# check; and last, exactly:
#
#   min_ratio=<x> sweep_ratio=<y> compile_speedup=<z>
#
#   min_ratio        lowest rbench/timm ratio over all rows, each the median over the rounds of
#                    the round's ratio (target: at least 0.98)
#   sweep_ratio      highest rbench/timm sweep wall-time ratio over all settings, each the median
#                    over the rounds of the round's ratio (target: at most 0.5)
#   compile_speedup  rbench's samples/s with +compile over without, for COMPILE_MODEL in the
#                    compile setting (target on cuda: at least 1.5 for resnet50 amp nhwc)
#
# --device cuda: the six models at batch 256, 10 warm-up and 40 timed steps, amp nchw, amp nhwc
# and amp bf16 nhwc. --device cpu: a variant for a small machine (three small models, batch 2,
# 3 warm-up and 10 timed steps, fp32 nchw and nhwc: CPUs without bf16 instructions run bf16
# autocast many times slower), meant to finish in a few minutes. It runs both tools on one
# intra-op thread (OMP_NUM_THREADS, unless set): on a shared machine, threads that wait for
# each other at every op turn another process's load into tenfold swings of step times.
#
# --rounds N: rounds per setting (default 3 on cpu, where load drifts; 1 on cuda, where the
# device time is short). --models replaces the variant's model list (a shorter check; the compile check then runs on
# COMPILE_MODEL if listed, else on the first model). --work DIR keeps the sweeps' CSVs and logs
# in DIR instead of a new temp folder; --report only prints the report of what DIR holds, for
# a sweep that was stopped before the end (the missing rows print as '-').
set -uo pipefail

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
timm_script="" device=cuda only_models="" work="" report_only=0 rounds=""
while [ $# -gt 0 ]; do
    case "$1" in
        --timm) timm_script=${2:-}; shift 2 || usage ;;
        --device) device=${2:-}; shift 2 || usage ;;
        --models) only_models=${2:-}; shift 2 || usage ;;
        --work) work=${2:-}; shift 2 || usage ;;
        --rounds) rounds=${2:-}; shift 2 || usage ;;
        --report) report_only=1; shift ;;
        *) usage ;;
    esac
done
[ $report_only = 1 ] && [ ! -d "$work" ] && { echo "throughput.sh: --report needs --work DIR of an earlier sweep" >&2; exit 2; }
[ $report_only = 1 ] || [ -f "$timm_script" ] || { echo "throughput.sh: --timm PATH must name timm's benchmark.py" >&2; exit 2; }
PYTHON=${PYTHON:-python3}

# Each setting: name | rbench backend stack | timm benchmark.py flags.
case "$device" in
    cuda)
        models="resnet50 resnet18 efficientnet_b0 mobilenetv3_large_100 vit_base_patch16_224 convnext_tiny"
        batch=256 warmup=10 steps=40
        settings=("amp-nchw|cuda-amp|--amp"
                  "amp-nhwc|cuda-amp+channels-last|--amp --channels-last"
                  "amp_bf16-nhwc|cuda-amp-bf16+channels-last|--amp --amp-dtype bfloat16 --channels-last")
        compile_model=resnet50 compile_setting=1 rounds=${rounds:-1} ;;
    cpu)
        models="mobilenetv3_large_100 resnet18 efficientnet_b0"
        batch=2 warmup=3 steps=10
        settings=("fp32-nchw|cpu|"
                  "fp32-nhwc|cpu+channels-last|--channels-last")
        compile_model=resnet18 compile_setting=0 rounds=${rounds:-3}
        export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} ;;
    *) usage ;;
esac
if [ -n "$only_models" ]; then
    models=${only_models//,/ }
    case " $models " in *" $compile_model "*) ;; *) compile_model=${models%% *} ;; esac
fi

if [ $report_only = 0 ]; then  # the sweeps (else only the report, below)
if [ -n "$work" ]; then
    mkdir -p "$work" && [ -z "$(ls -A "$work")" ] \
        || { echo "throughput.sh: --work $work must be a new or empty folder" >&2; exit 2; }
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/rbench-throughput.XXXXXX")
fi
printf '%s\n' $models > "$work/models.txt"
echo "$compile_model $compile_setting" > "$work/compile.txt"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "throughput.sh: --rounds takes a whole number of at least 1" >&2; exit 2; }
common_rbench=(--bench infer --batch-size "$batch" --warmup-steps "$warmup" --bench-steps "$steps" --bench-seconds 0
               --bench-repeats 1 --no-retry)
common_timm=(--bench inference --device "$device" -b "$batch" --num-warm-iter "$warmup" --num-bench-iter "$steps" --no-retry)

run_rbench() {  # out-dir models stack: one rbench sweep
    "$PYTHON" -m rbench run -m "$2" -b "$3" "${common_rbench[@]}" --out "$1" > "$1.log" 2>&1 \
        || echo "throughput.sh: rbench failed, see $1.log" >&2
}

run_timm() {  # results-csv model-args... flags...: one timm sweep
    local csv=$1; shift
    "$PYTHON" "$timm_script" "${common_timm[@]}" "$@" --results-file "$csv" > "$csv.log" 2>&1 \
        || echo "throughput.sh: timm's benchmark.py failed, see $csv.log" >&2
}

echo "rbench vs timm benchmark.py on $device: batch $batch, $warmup warm-up and $steps timed steps${OMP_NUM_THREADS:+, OMP_NUM_THREADS=$OMP_NUM_THREADS}; work folder $work"
# The compile setting's rounds first, then the compile check, then the other settings: a run
# stopped early (gpu_check.sh's deadline) has the compile targets and one full setting.
for i in "$compile_setting" "${!settings[@]}"; do
    [ -f "$work/timm-$i-1.csv.log" ] && continue
    IFS='|' read -r name stack flags <<< "${settings[$i]}"
    for ((r = 1; r <= rounds; r++)); do
        for tool in $( ((r % 2)) && echo rbench timm || echo timm rbench); do
            start=$EPOCHREALTIME
            if [ $tool = rbench ]; then
                run_rbench "$work/rbench-$i-$r" "@$work/models.txt" "$stack"
            else
                # shellcheck disable=SC2086  # flags are words
                run_timm "$work/timm-$i-$r.csv" --model-list "$work/models.txt" $flags
            fi
            echo "$i $name $r $tool $start $EPOCHREALTIME" >> "$work/sweeps.txt"
        done
    done
    if [ "$i" = "$compile_setting" ]; then
        run_rbench "$work/rbench-compile" "$compile_model" "$stack+compile"
        # shellcheck disable=SC2086
        run_timm "$work/timm-compile.csv" --model "$compile_model" $flags --torchcompile
    fi
done
fi  # the sweeps

read -r compile_model compile_setting < "$work/compile.txt"
"$PYTHON" - "$work" "$compile_model" "$compile_setting" <<'EOF'
"""The report: per-model samples/s of both tools, sweep wall times, the compile check, the last line."""
import csv
import statistics
import sys
from pathlib import Path

work, compile_model, compile_setting = Path(sys.argv[1]), sys.argv[2], sys.argv[3]


def rates(path, column="infer_samples_per_sec"):
    """{model: samples/s} of one benchmark CSV's `column`."""
    if not path or not path.is_file():
        return {}
    with path.open() as f:
        return {r["model"]: float(r[column]) for r in csv.DictReader(f) if r.get(column)}


def rbench_rates(folder, column="infer_samples_per_sec"):
    """rbench's samples/s from its detailed file: by default timm's statistic (the batch over the
    mean step time); `samples_per_sec_median` is rbench's median-based figure."""
    return rates(next((folder / "detailed").glob("benchmark-infer-*.csv"), None), column)


def fmt(x, spec=",.2f"):
    return "-" if x is None else format(x, spec)


ratios, sweep_ratios = [], []
models = (work / "models.txt").read_text().split()
sweeps_file = work / "sweeps.txt"
# setting index -> (name, {tool: {round: seconds}})
settings = {}
for line in sweeps_file.read_text().splitlines() if sweeps_file.is_file() else []:
    i, name, r, tool, start, end = line.split()
    settings.setdefault(i, (name, {"rbench": {}, "timm": {}}))[1][tool][r] = float(end) - float(start)


def median(values):
    values = sorted(v for v in values if v is not None)
    return statistics.median(values) if values else None


print("\nsamples/s, timm's statistic in both tools (the timed loop's samples over its time): each tool's median over")
print("the rounds, the median of the rounds' ratios, each round's figure; rbench's median-based figure last")
print(f"{'setting':<14} {'model':<24} {'rbench/s':>10} {'timm/s':>10} {'ratio':>7}  {'rbench rounds':<30} {'timm rounds':<30} {'median/s':>10}")
for i, (name, walls) in settings.items():
    rounds = sorted(set(walls["rbench"]) & set(walls["timm"]), key=int)  # rounds both tools finished
    ours = {r: rbench_rates(work / f"rbench-{i}-{r}") for r in rounds}
    theirs = {r: rates(work / f"timm-{i}-{r}.csv") for r in rounds}
    medians = {r: rbench_rates(work / f"rbench-{i}-{r}", "samples_per_sec_median") for r in rounds}
    for model in models:
        a = median(ours[r].get(model) for r in rounds)
        b = median(theirs[r].get(model) for r in rounds)
        # the ratio of each round's pair (run back to back, so a drift of the machine's speed
        # falls on both), then their median
        ratio = median(ours[r][model] / theirs[r][model] for r in rounds if ours[r].get(model) and theirs[r].get(model))
        if ratio:
            ratios.append(ratio)
        each = lambda found: " ".join(fmt(found[r].get(model), ".1f") for r in rounds) or "-"  # noqa: E731
        print(f"{name:<14} {model:<24} {fmt(a):>10} {fmt(b):>10} {fmt(ratio, '.3f'):>7}  {each(ours):<30} "
              f"{each(theirs):<30} {fmt(median(medians[r].get(model) for r in rounds)):>10}")

print(f"\n{'sweep':<14} {'rbench s':>10} {'timm s':>10} {'ratio':>7}  (medians over the rounds, of their ratios; every round)")
for i, (name, walls) in settings.items():
    rounds = sorted(set(walls["rbench"]) & set(walls["timm"]), key=int)
    if not rounds:
        continue
    ours, theirs = median(walls["rbench"][r] for r in rounds), median(walls["timm"][r] for r in rounds)
    ratio = median(walls["rbench"][r] / walls["timm"][r] for r in rounds)
    sweep_ratios.append(ratio)
    every = " ".join(f"{walls['rbench'][r]:.1f}/{walls['timm'][r]:.1f}" for r in rounds)
    print(f"{name:<14} {ours:>10.1f} {theirs:>10.1f} {ratio:>7.3f}  {every}")

setting = settings[compile_setting][0] if compile_setting in settings else f"setting {compile_setting}"
eager_rounds = settings[compile_setting][1]["rbench"] if compile_setting in settings else {}
eager = median(rbench_rates(work / f"rbench-{compile_setting}-{r}").get(compile_model) for r in eager_rounds)
compiled = rbench_rates(work / "rbench-compile").get(compile_model)
timm_compiled = rates(work / "timm-compile.csv").get(compile_model)
speedup = compiled / eager if compiled and eager else None
versus = compiled / timm_compiled if compiled and timm_compiled else None
print(f"\ncompile {compile_model} {setting}: rbench eager {fmt(eager)}/s, +compile {fmt(compiled)}/s "
      f"(speedup {fmt(speedup, '.3f')}); timm --torchcompile {fmt(timm_compiled)}/s (rbench/timm {fmt(versus, '.3f')})")
print(f"min_ratio={fmt(min(ratios) if ratios else None, '.3f')} "
      f"sweep_ratio={fmt(max(sweep_ratios) if sweep_ratios else None, '.3f')} "
      f"compile_speedup={fmt(speedup, '.3f')}")
EOF
