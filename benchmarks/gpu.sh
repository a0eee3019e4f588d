#!/usr/bin/env bash
# vscjax against PyTorch (eager and torch.compile) on one GPU, and the trainer end to end, in
# about 10 minutes.
#
#   benchmarks/gpu.sh            # the runs below
#   benchmarks/gpu.sh --smoke    # tiny configurations (two or three minutes): checks the set-up
#   PYTHON=/path/to/python benchmarks/gpu.sh     # default interpreter: python3
#
# Installs nothing (a GPU machine may have no network). The interpreter must already have jax
# with its CUDA plugin (jax[cuda12] or jax[cuda13]), a CUDA build of torch (the bench extra pins
# torch 2.11 to 2.13; the CPU wheel will not do), flax, optax, ml_collections and matplotlib. With a
# network: python3 -m venv .venv && .venv/bin/pip install -e ".[bench]" "jax[cuda13]", then
# PYTHON=.venv/bin/python benchmarks/gpu.sh. MNIST's IDX files must be in $VSCJAX_DATA_DIR/mnist
# (the end-to-end rows and the MNIST training runs read them). The script checks all this
# first and says what is missing.
#
# Runs, in order (each starts no configuration after its --max-minutes and records the rest
# as skipped; a size that runs out of GPU memory is recorded as skipped too):
#   1. float32 (TF32 matmuls in both frameworks), B=512, L=3200: alignment off, centroid and
#      pairwise (torch.compile is skipped for pairwise: it would unroll 256 row blocks), then
#      L=200 off; vscjax also with 16 steps per call. ~2.5 minutes.
#   2. bfloat16, alignment off, L in {16384, 65536} x B in {4096, 16384}. ~3 minutes.
#   3. end to end, float32, B=512, L=3200 and 200: train.py's loop with host feeding, device
#      feeding, device feeding with 16 steps per call, and PyTorch DataLoader loops, beside the
#      bare steps. ~3 minutes.
#   4. configs/mnist.py and configs/mnist_vsc.py trained with 20 steps per call (their reported
#      results come from the same runs on CPU): wall time of the whole command. ~1 minute.
# Everything goes to one folder, benchmarks/results/gpu-<date>/: <run>.json and .png per
# benchmark run, tables.md, log.txt, nvidia-smi.txt, versions.txt (git commit, pip list) and
# <config>.time / <config>.summary.json for the training runs.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

if ! "$python" - <<'PY'
import importlib.util
import os
import sys

needed = ("jax", "torch", "flax", "optax", "ml_collections", "matplotlib")
missing = [name for name in needed if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"missing Python packages: {' '.join(missing)}")
import jax
import torch

from vscjax import data

problems = []
if jax.default_backend() != "gpu":
    problems.append(f"jax {jax.__version__} sees no GPU (backend: {jax.default_backend()}); "
                    "install jax[cuda12] or jax[cuda13]")
if not torch.cuda.is_available():
    problems.append(f"torch {torch.__version__} sees no GPU; install a CUDA build of torch")
mnist = data.resolve_data_dir("", "mnist")
if not os.path.isdir(mnist):
    problems.append(f"no MNIST IDX files in {mnist}; set VSCJAX_DATA_DIR")
sys.exit("; ".join(problems) or None)
PY
then
  echo "gpu.sh: $python cannot run the GPU benchmark (see above); nothing was run." >&2
  exit 1
fi

out=benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true
{
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  "$python" -m pip list 2>/dev/null || true
} >"$out/versions.txt"

bench() {  # NAME ARGS...: one run of the suite, results in $out/NAME.json (and .png)
  local name=$1
  shift
  echo "## $name: $*" >>"$out/tables.md"
  "$python" -m benchmarks.throughput --device gpu --out "$out/$name.json" "$@" \
    2> >(tee -a "$out/log.txt" >&2) | tee -a "$out/tables.md"
  echo >>"$out/tables.md"
}

train_run() {  # CONFIG: train configs/CONFIG.py with 20 steps per call, timing the whole command
  local config=$1 start elapsed_ms
  start=$(date +%s%N)
  "$python" train.py --config "configs/$config.py" --config.train.steps_per_call=20 \
    --workdir "$out/workdir-$config" 2>>"$out/log.txt" | tee -a "$out/tables.md"
  elapsed_ms=$((($(date +%s%N) - start) / 1000000))
  echo "$config: $((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000))) s of wall time (train.py, start to end)" \
    | tee "$out/$config.time" | tee -a "$out/tables.md"
  cp "$out/workdir-$config/summary.json" "$out/$config.summary.json"
}

if [[ ${1:-} == --smoke ]]; then
  bench smoke --smoke --dtype float32 bfloat16 --steps-per-call 4 --max-minutes 2
  bench smoke-end-to-end --end-to-end --smoke --dtype float32 --steps-per-call 4 --max-minutes 1
else
  bench float32 --quick --latent 3200 --batch 512 --align off centroid pairwise \
    --dtype float32 --steps-per-call 16 --max-minutes 2
  bench float32-L200 --quick --latent 200 --batch 512 --align off --dtype float32 \
    --steps-per-call 16
  bench bfloat16 --quick --latent 16384 65536 --batch 4096 16384 --align off --dtype bfloat16 \
    --max-minutes 3
  bench end-to-end --end-to-end --latent 3200 200 --batch 512 --align off --dtype float32 \
    --steps-per-call 16 --max-minutes 3
  train_run mnist
  train_run mnist_vsc
fi
echo "gpu.sh: results in $out"
