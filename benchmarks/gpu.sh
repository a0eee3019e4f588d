#!/usr/bin/env bash
# Throughput of vscjax against PyTorch (eager and torch.compile) on one GPU, in about 10 minutes.
#
#   benchmarks/gpu.sh            # the GPU grid below
#   benchmarks/gpu.sh --smoke    # two tiny configurations (a minute or two): checks the set-up
#   PYTHON=/path/to/python benchmarks/gpu.sh     # default interpreter: python3
#
# Installs nothing (a GPU machine may have no network). The interpreter must already have jax
# with its CUDA plugin (jax[cuda12] or jax[cuda13]), a CUDA build of torch (the bench extra pins
# torch 2.11 to 2.13; the CPU wheel will not do), flax, optax, ml_collections and matplotlib. With a
# network: python3 -m venv .venv && .venv/bin/pip install -e ".[bench]" "jax[cuda13]", then
# PYTHON=.venv/bin/python benchmarks/gpu.sh. The script checks this first and says what is missing.
#
# Grid, sized for 10 minutes on one H100 (most of it torch.compile's compiles): B=512 and
# L in {200, 3200, 16384}; float32 (TF32 matmuls in both frameworks) with the alignment loss
# off, centroid and pairwise, then bfloat16 with it off. Each run starts no configuration after
# its --max-minutes and records the rest as skipped. Everything goes to one folder,
# benchmarks/results/gpu-<date>/: <run>.json and <run>.png per run, tables.md, log.txt and
# nvidia-smi.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

if ! "$python" - <<'PY'
import importlib.util
import sys

needed = ("jax", "torch", "flax", "optax", "ml_collections", "matplotlib")
missing = [name for name in needed if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"missing Python packages: {' '.join(missing)}")
import jax
import torch

problems = []
if jax.default_backend() != "gpu":
    problems.append(f"jax {jax.__version__} sees no GPU (backend: {jax.default_backend()}); "
                    "install jax[cuda12] or jax[cuda13]")
if not torch.cuda.is_available():
    problems.append(f"torch {torch.__version__} sees no GPU; install a CUDA build of torch")
sys.exit("; ".join(problems) or None)
PY
then
  echo "gpu.sh: $python cannot run the GPU benchmark (see above); nothing was run." >&2
  exit 1
fi

out=benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true

bench() {  # NAME ARGS...: one run of the suite, results in $out/NAME.json and .png
  local name=$1
  shift
  echo "## $name: $*" >>"$out/tables.md"
  "$python" -m benchmarks.throughput --device gpu --out "$out/$name.json" "$@" \
    2> >(tee -a "$out/log.txt" >&2) | tee -a "$out/tables.md"
  echo >>"$out/tables.md"
}

if [[ ${1:-} == --smoke ]]; then
  bench smoke --smoke --dtype float32 bfloat16 --max-minutes 3
else
  bench float32 --quick --latent 200 3200 16384 --batch 512 --align off centroid pairwise \
    --dtype float32 --max-minutes 5
  bench bfloat16 --quick --latent 200 3200 16384 --batch 512 --align off --dtype bfloat16 \
    --max-minutes 2
fi
echo "gpu.sh: results in $out"
