#!/usr/bin/env bash
# Record the gallery scale tests of benchmarks/README.md ("Gallery index").
# Each run writes one JSON report (with the machine) to benchmarks/results/.
# Then: python benchmarks/plot_bench.py  ->  benchmarks/results/bench.png
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results
run() { name=$1; shift; echo "== $name"; dedup bench "$@" --json "$out/bench-$name.json"; }

# 1M, every profile, at each profile's documented operating point.
run 1m-face-like     --job jobs/bench-1m.toml
run 1m-uniform       --job jobs/bench-1m.toml --profile uniform --compare flat
run 1m-arcface-like  --job jobs/bench-1m.toml --profile arcface-like --compare flat
# face-like at a threshold calibrated for FPIR 1e-3 at 1M (benchmarks/eval): no cap explosion.
run 1m-face-like-t0.96 --job jobs/bench-1m.toml --threshold 0.96 --compare flat
# What the uniform worst case needs to reach 0.999.
run 1m-uniform-nprobe512 --job jobs/bench-1m.toml --profile uniform --compare flat --nprobe 512
# 10M: runs to completion on a 24 GiB machine.
run 10m-face-like    --job jobs/bench-10m.toml
run 10m-uniform      --job jobs/bench-10m.toml --profile uniform
