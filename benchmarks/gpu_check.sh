#!/usr/bin/env bash
# The GPU check of docs/benchmarks.md, in one run on a fresh CUDA machine (under 8 minutes on an
# H100/H200-class GPU): installs what it needs from local wheels, runs the CUDA-only tests, times
# HAT-S/HAT/HAT-L x4 at 64 and 256 LR (original formulation, explicit fp32, fused fp32/bf16/fp16,
# torch.compile, an AMP training step), measures peak memory against the original formulation,
# times hat-lam's attribution (HAT x4, 64x64 LR, fold 50) against the LAM reference formulation,
# and writes results.json, tables.md (the tables docs/benchmarks.md takes) and log.txt to the
# output folder ($OUT if set, else ./gpu_check_out).
#
#   bash benchmarks/gpu_check.sh             # run everything
#   bash benchmarks/gpu_check.sh --dry-run   # list the steps and their commands, run nothing
#
# Packages: torch, torchvision, einops and scikit-image are expected on the machine; basicsr
# 1.4.2, lmdb, addict and yapf are installed from wheels in .whl/ at the repository root if that
# folder exists (nothing is downloaded here). Prepare it where pip can reach the registry:
#   echo /.whl/ >> .git/info/exclude
#   pip wheel --no-deps -w .whl basicsr==1.4.2        # basicsr 1.4.2 is a source release
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .whl lmdb addict yapf
# Options: --out DIR, --budget SECONDS (whole run, default 465), --overwrite (replace an earlier
# run's results in the output folder), --dry-run.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-gpu_check_out}"
BUDGET=465
DRY_RUN=0
OVERWRITE=0

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --overwrite) OVERWRITE=1 ;;
        --out) [ $# -ge 2 ] || { echo "gpu_check.sh: --out needs a folder" >&2; exit 2; }; OUT_DIR="$2"; shift ;;
        --budget)
            [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] || { echo "gpu_check.sh: --budget needs a number of seconds" >&2; exit 2; }
            BUDGET="$2"; shift ;;
        -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown option '$1'; use --dry-run, --out DIR, --budget SECONDS or --overwrite" >&2
           exit 2 ;;
    esac
    shift
done

OUT_DIR="$(realpath -m "$OUT_DIR")"
WORK="${OUT_DIR}/.steps"   # per-step JSON/markdown, merged into results.json and tables.md at the end
SITE=/tmp/hat_site         # where the wheels of .whl/ are installed (on PYTHONPATH for every step)
BENCH="$PY $ROOT/benchmarks/bench_hat.py --device cuda"
WHEELS="if compgen -G '$ROOT/.whl/*.whl' > /dev/null; then $PY -m pip install -q --no-index --no-deps --no-compile \
--no-cache-dir --upgrade --target $SITE $ROOT/.whl/*.whl; else echo 'no .whl folder: using installed packages'; fi"

# name | time limit (s) | command; in order of importance, as the budget may run out (compile is slowest)
STEPS=(
    "setup|90|$WHEELS && $PY -c 'import torch, basicsr, hat; print(torch.__version__, torch.cuda.get_device_name())'"
    "cuda-tests|150|cd $ROOT && $PY -m pytest -m cuda -q -p no:cacheprovider tests"
    "forward|200|$BENCH --models HAT-S HAT HAT-L --sizes 64 256 --modes forward --warmup 2 --repeat 5 --variants original:fp32 explicit:fp32 fused:fp32 fused:bf16 fused:fp16 --json $WORK/forward.json --markdown $WORK/forward.md"
    "memory|150|$PY $ROOT/benchmarks/bench_memory.py --device cuda --cases HAT:4:256 HAT-L:2:256 HAT:4:512 --variants original:fp32 fused:fp32 fused:bf16 --json $WORK/memory.json --markdown $WORK/memory.md"
    "train|90|$BENCH --models HAT --sizes 64 --batch 4 --modes train --warmup 2 --repeat 5 --variants fused:fp32 fused:bf16 fused:fp16 fused:bf16:ckpt --json $WORK/train.json --markdown $WORK/train.md"
    "lam|90|$PY $ROOT/benchmarks/bench_lam.py --device cuda --model HAT_SRx4 --size 64 --fold 50 --json $WORK/lam.json --markdown $WORK/lam.md"
    "compile|180|$BENCH --models HAT --sizes 64 256 --modes forward --warmup 2 --repeat 5 --variants fused:bf16 fused:bf16:compile --json $WORK/compile.json --markdown $WORK/compile.md"
)

if [ "$DRY_RUN" = 1 ]; then
    echo "gpu_check.sh: steps (output folder $OUT_DIR, budget ${BUDGET}s; each step also stops at its own limit):"
    i=0
    for step in "${STEPS[@]}"; do
        i=$((i + 1))
        IFS='|' read -r name limit cmd <<< "$step"
        printf '%d. %s (limit %ss): %s\n' "$i" "$name" "$limit" "$cmd"
    done
    echo "$((i + 1)). report: merge the steps' JSON into $OUT_DIR/results.json and their tables into $OUT_DIR/tables.md"
    exit 0
fi

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check.sh: no CUDA GPU visible to $PY (torch.cuda.is_available() is False); run it on a CUDA machine" >&2
    exit 1
fi
if [ -e "$OUT_DIR/results.json" ] && [ "$OVERWRITE" = 0 ]; then
    echo "gpu_check.sh: $OUT_DIR/results.json exists from an earlier run; pass --overwrite or choose --out DIR" >&2
    exit 1
fi
mkdir -p "$WORK"
LOG="$OUT_DIR/log.txt"
: > "$LOG"
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

START=$(date +%s)
STATUS=()
for step in "${STEPS[@]}"; do
    IFS='|' read -r name limit cmd <<< "$step"
    left=$((BUDGET - ($(date +%s) - START) - 15))   # 15 s kept for the report
    if [ "$left" -lt 20 ]; then
        STATUS+=("$name=skipped (budget spent)")
        echo "== $name: skipped, the ${BUDGET}s budget is spent" | tee -a "$LOG"
        continue
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit ${limit}s): $cmd" | tee -a "$LOG"
    t0=$(date +%s)
    timeout "$limit" bash -c "$cmd" 2>&1 | tee -a "$LOG" | { grep -v -e '^USDT' -e 'profiler' || true; } | tail -n 25
    rc=${PIPESTATUS[0]}
    [ "$rc" = 124 ] && result="timed out after ${limit}s" || result="exit $rc"
    STATUS+=("$name=$result in $(( $(date +%s) - t0 ))s")
    echo "== $name: $result in $(( $(date +%s) - t0 ))s" | tee -a "$LOG"
    if [ "$name" = setup ] && [ "$rc" != 0 ]; then
        echo "gpu_check.sh: setup failed (see $LOG): put the missing wheels in $ROOT/.whl" >&2
        break
    fi
done

"$PY" - "$OUT_DIR" "$WORK" "${STATUS[@]}" <<'EOF' 2>&1 | tee -a "$LOG"
import json, sys
from pathlib import Path

out, work, statuses = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
steps = dict(s.split('=', 1) for s in statuses)
results = {'steps': steps}
tables = ['# GPU check\n', 'Steps: ' + '; '.join(f'{k}: {v}' for k, v in steps.items()) + '\n']
for name in ('forward', 'compile', 'train', 'memory', 'lam'):
    data, table = work / f'{name}.json', work / f'{name}.md'
    if data.exists():
        results[name] = json.loads(data.read_text())
    tables.append(f'## {name}\n')
    tables.append(table.read_text() if table.exists() else f'(no table: step {steps.get(name, "not run")})\n')
(out / 'results.json').write_text(json.dumps(results, indent=2))
(out / 'tables.md').write_text('\n'.join(tables))
print(f'wrote {out / "results.json"} and {out / "tables.md"}')
EOF
rm -rf "$WORK"
echo "gpu_check.sh: done in $(( $(date +%s) - START ))s: ${STATUS[*]}"
