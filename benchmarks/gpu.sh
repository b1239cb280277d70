#!/usr/bin/env bash
# The accelerator checks (benchmarks/gpu_bench.py) in one run of under 8 minutes; writes its report to
# benchmarks/results/gpu-<date>.md, or to $1 when given (on the lent device machine: "$OUT/gpu.md").
#
#   bash benchmarks/gpu.sh [report.md]          # on a machine with a GPU and convexnn installed with jax[cuda]
#   bash benchmarks/gpu.sh --smoke              # tiny sizes on any machine: checks the script, measures nothing
#
# Each part has its own time limit, so one slow part cannot take the others' time: 60 s for the iteration, 120 s
# for the path, 150 s for the working set and 120 s for the exact ReLU (a part that runs out is reported as such).
set -u
cd "$(dirname "$0")"
smoke=""
out="results/gpu-$(date -u +%Y-%m-%d).md"
if [ "${1:-}" = "--smoke" ]; then smoke="--smoke"; out="${TMPDIR:-/tmp}/gpu-smoke.md"; elif [ -n "${1:-}" ]; then out="$1"; fi
python -c "import jax; print('devices:', jax.devices())"
: > "$out"
for part in iteration:60 path:120 working:150 relu:120; do
  name="${part%%:*}"; limit="${part##*:}"
  if ! timeout "$limit" python gpu_bench.py --parts "$name" $smoke --out "$out.$name"; then
    echo "## $name: did not finish within $limit s" > "$out.$name"
  fi
  cat "$out.$name" >> "$out" && rm -f "$out.$name"
done
echo "report: $out"
