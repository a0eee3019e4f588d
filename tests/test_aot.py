"""Compiling the trainer for TPU slices on this machine (vscjax.aot), with libtpu's compiler.

Skipped with a reason where libtpu is not installed (``pip install -e ".[tpu]"``, which the
test extra includes). In CI the class-mask prior's MNIST config compiles for v4:2x2x1, v5e:4x4
(4 hosts) and v6e:2x2, and the largest shipped program (L = 16,384) and a shapes config for one
generation each; the rest of the grid, every shipped config on every generation, is marked
``grid`` and runs outside CI (``python -m pytest -m grid tests/test_aot.py``, about 20 minutes
on 2 cores); ``reports/tpu_slices.py`` compiles every shipped config for v5e:4x4 too.
"""

import glob
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import optax
import pytest

from helpers import REPO_ROOT, load_config

pytestmark = [
    pytest.mark.tpu,
    pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                       reason='libtpu is not installed (pip install -e ".[tpu]")'),
]

from vscjax import aot, hlo_costs  # noqa: E402

TINY = os.path.join(REPO_ROOT, "configs", "tiny.py")
SHIPPED = sorted(os.path.splitext(os.path.basename(p))[0]
                 for p in glob.glob(os.path.join(REPO_ROOT, "configs", "*.py")))
TOPOLOGIES = ("v4:2x2x1", "v5e:4x4", "v6e:2x2")
REQUIRED = ("topology", "chips", "hosts", "hbm_per_chip_bytes", "hbm_needed_bytes", "fits", "flops",
            "bytes_accessed", "estimated_step_seconds", "roofline_step_seconds", "minimal_bytes",
            "predicted_samples_per_second")


def _matmul_flops_per_chip(config, image_shape, chips):
    """Our own count of one step's matrix-product FLOPs per chip: the forward's matmuls
    (2 B D H + 2 B H 3L + 2 B L H + 2 B H D for the one-hidden-layer MLP), and the backward's
    two matmuls per forward one."""
    b = config.train.batch_size // chips
    d, (h,), latent = int(jnp.prod(jnp.array(image_shape))), config.model.hidden, config.model.latent_dim
    forward = 2 * b * (d * h + h * 3 * latent + latent * h + h * d)
    return 3 * forward


def test_the_latent_split_is_the_smallest_that_splits_the_batches():
    assert aot.latent_split_for(load_config("mnist_class_prior"), 16) == 2  # 120 over 8
    assert aot.latent_split_for(load_config("mnist_class_prior"), 4) == 1
    assert aot.latent_split_for(load_config("tiny", train__batch_size=20), 16) == 4  # 20 over 4


def test_tiny_config_figures_hold_together():
    # Wide enough that the matrix products are most of the step's FLOPs (at the shipped 32
    # hidden units and batch 32 the random bits and Adam's element-wise work outweigh them).
    config = load_config("tiny", train__batch_size=256, model__hidden=(128,))
    report = aot.analyse(config, "v5e:2x2", log=lambda line: None)
    assert report["chips"] == 4 and report["hosts"] == 1 and report["chip"] == "v5e"
    assert report["hbm_per_chip_bytes"] == 16 * 2**30
    params = report["hbm_parts_bytes"]["parameters"]
    assert params > 0 and report["hbm_needed_bytes"] >= params + report["hbm_parts_bytes"]["optimizer_state"]
    assert report["fits"]
    ours = _matmul_flops_per_chip(config, (8, 8, 1), 4)
    assert ours / 2 <= report["flops"] <= 2 * ours, (report["flops"], ours)
    assert ours / 2 <= report["matmul_flops"] <= 2 * ours
    assert report["estimated_step_seconds"] > 0 and report["roofline_step_seconds"] > 0
    assert report["predicted_samples_per_second"] == pytest.approx(
        config.train.batch_size / report["estimated_step_seconds"])
    assert report["bytes_accessed"] >= report["minimal_bytes"] > 0


def test_the_negative_whole_step_estimate_comes_from_concat_bitcast_calls():
    """Adam on the parameters of an L=3200 MLP model: the TPU compiler prefetches the largest in
    slices joined by ConcatBitcast custom calls, each priced at -1 s; counting them as 0 s gives
    the estimate of the bytes moved."""
    devices = aot.slice_devices("v5e:2x2")
    mesh = jax.make_mesh((len(devices),), ("data",), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    shapes = [(784, 400), (400,), (400, 9600), (9600,), (3200, 400), (400,), (400, 784), (784,)]
    params = {str(i): jax.ShapeDtypeStruct(shape, jnp.float32, sharding=replicated)
              for i, shape in enumerate(shapes)}
    tx = optax.adam(1e-3)
    opt_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                             jax.eval_shape(tx.init, params))
    compiled = jax.jit(tx.update).lower(params, opt_state, params).compile()
    raw = compiled.cost_analysis()["optimal_seconds"]
    unknown = hlo_costs.unknown_cost_calls(compiled.as_text())
    assert unknown and raw < 0
    corrected = raw + len(unknown)
    moved = compiled.cost_analysis()["bytes accessed"] / aot.CHIPS["TPU v5 lite"].hbm_bandwidth
    assert 0 < corrected and corrected == pytest.approx(moved, rel=0.5)


def _run(*args):
    env = dict(os.environ, XLA_FLAGS="")
    return subprocess.run([sys.executable, "-m", "vscjax.aot", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_command_writes_the_figures_as_json(tmp_path):
    path = tmp_path / "aot.json"
    result = _run("--config", TINY, "--topology", "v5e:4x4", "--config.train.batch_size=64",
                  "--config.train.eval_batch_size=64", "--json", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HBM per chip" in result.stdout and "fits" in result.stdout
    record = json.loads(path.read_text())
    assert set(REQUIRED) <= record.keys()
    assert record["chips"] == 16 and record["hosts"] == 4
    assert record["provenance"]["versions"]["libtpu"]


@pytest.mark.parametrize("args, words", [
    (["--topology", "v5e:2x2", "--config.model.latent_dim=100000000"], ["does not fit", "GiB more than"]),
    (["--topology", "v5e:3x3"], ["topology 'v5e:3x3'"]),
    (["--topology", "v5e:4x4", "--config.train.batch_size=24", "--config.train.eval_batch_size=64"],
     ["train.batch_size", "16 devices"]),
    (["--topology", "v5e:2x2", "--config.model.latent_dimm=3"], ["latent_dimm"]),
])
def test_command_refuses_in_one_line(args, words):
    result = _run("--config", TINY, *args)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("vscjax.aot:")]
    assert len(lines) == 1, result.stderr[-3000:]
    for word in words:
        assert word in lines[0], (word, lines[0])


def _shipped(name, topology):
    """A shipped config as it runs on ``topology``: where its batch does not split over the
    slice's chips (120 over 16), the latent dimension takes the smallest split that lets it."""
    config = load_config(name)
    chips = {"v4:2x2x1": 4, "v5e:4x4": 16, "v6e:2x2": 4}[topology]
    return load_config(name, mesh__latent=aot.latent_split_for(config, chips))


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_a_shipped_mnist_config_compiles_for_every_generation(topology):
    """Represents the shipped configs in the default run: the class-mask prior with its
    class-balanced batches of 120 (on v5e:4x4 the latent axis over 2 chips), L = 200."""
    report = aot.analyse(_shipped("mnist_class_prior", topology), topology, instructions=0,
                         log=lambda line: None)
    assert report["fits"] and report["estimated_step_seconds"] > 0


CI_CONFIGS = ("large_latent", "shapes_class_prior")  # with mnist_class_prior above: CI's share


@pytest.mark.parametrize("name", [n if n in CI_CONFIGS else pytest.param(n, marks=pytest.mark.grid)
                                  for n in SHIPPED])
def test_every_shipped_config_compiles(name):
    """Every config in configs/ compiles as train.py runs it, each on one of the three
    generations in turn (all of them on every generation: the next test, outside CI)."""
    topology = TOPOLOGIES[SHIPPED.index(name) % len(TOPOLOGIES)]
    report = aot.analyse(_shipped(name, topology), topology, instructions=0, log=lambda line: None)
    assert report["fits"] and report["estimated_step_seconds"] > 0


@pytest.mark.grid
@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_compiles_on_every_generation(name, topology):
    report = aot.analyse(_shipped(name, topology), topology, instructions=0, log=lambda line: None)
    assert report["fits"] and report["estimated_step_seconds"] > 0


class _Refused:
    """A lowered program whose compile fails with ``text``, as libtpu's compiler fails."""

    def __init__(self, text):
        self.text = text

    def compile(self):
        raise RuntimeError(self.text)


def test_no_room_for_the_temporaries_is_does_not_fit_and_other_failures_do_not_compile():
    with pytest.raises(aot.CompileError, match="^the step does not fit: RESOURCE_EXHAUSTED"):
        aot._compile(_Refused("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory "
                              "required for HLO temporaries (16.52G) exceeds available HBM (15.75G)."),
                     "the step")
    with pytest.raises(aot.CompileError, match="^the step does not compile: INTERNAL: boom"):
        aot._compile(_Refused("INTERNAL: boom"), "the step")
