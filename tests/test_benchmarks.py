"""The benchmarks' own measurements: page faults per step, and the end-to-end loops."""

import mmap

import numpy as np

from benchmarks import end_to_end, harness
from vscjax import data


def test_measure_counts_the_page_faults_of_a_fresh_buffer_per_step():
    """A call that maps 40 MiB anew (as glibc serves any allocation over 32 MiB) faults 10,240
    pages, a quarter of that per step at 4 steps a call; one that reuses its buffer, none."""
    size = 40 * 2**20

    def fresh_buffer():
        buffer = mmap.mmap(-1, size)
        buffer[::mmap.PAGESIZE] = b"\1" * (size // mmap.PAGESIZE)  # touch every page
        buffer.close()

    reused_buffer = mmap.mmap(-1, size)

    def reuse_buffer():
        reused_buffer[::mmap.PAGESIZE] = b"\1" * (size // mmap.PAGESIZE)

    schedule = dict(warmup=1, repeats=3, min_repeat_s=0.0)
    fresh = harness.Contender(fresh_buffer, lambda out: None, lambda: None, steps_per_call=4)
    reused = harness.Contender(reuse_buffer, lambda out: None, lambda: None)
    pages_per_step = size // mmap.PAGESIZE / 4
    assert pages_per_step <= harness.measure(fresh, **schedule)["page_faults_per_step"] < 1.2 * pages_per_step
    assert harness.measure(reused, **schedule)["page_faults_per_step"] < 10


def test_torch_loop_runs_every_step_across_epochs_and_times_each_interval():
    rng = np.random.default_rng(0)
    dataset = data.Dataset(rng.random((40, 2, 2, 1), dtype=np.float32),
                           rng.integers(0, 2, 40).astype(np.int32), 2, "small")
    seen = []

    def step(x, labels):  # a stand-in for the reference step: records its batches
        seen.append(x.shape[0])
        return x.sum()

    rates = end_to_end.torch_loop_rates(step, "cpu", dataset, 16, log_every=2, num_steps=7,
                                        workers=0)
    assert seen == [16] * 7  # two batches an epoch (drop_last): four epochs, seven steps
    assert len(rates) == 3 and all(r > 0 for r in rates)  # logged steps 0, 2, 4, 6: first left out


def test_vscjax_loop_is_the_trainer_with_the_placement_and_steps_per_call_asked_for(mnist_dir,
                                                                                     monkeypatch):
    monkeypatch.setenv("VSCJAX_DATA_DIR", str(mnist_dir).rsplit("/", 1)[0])
    config = end_to_end.trainer_config(16, 16, "off", "float32", (32,), placement="device",
                                       steps_per_call=2, log_every=2, num_steps=8)
    assert (config.data.name, config.data.placement, config.train.steps_per_call) == ("mnist", "device", 2)
    rates = end_to_end.vscjax_loop_rates(config)
    assert len(rates) == 4 and all(r > 0 for r in rates)  # logged steps 0, 2, 4, 6, 7
