"""The end-to-end benchmark's loops: they run the steps asked for and time every logged interval."""

import numpy as np

from benchmarks import end_to_end
from vscjax import data


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
