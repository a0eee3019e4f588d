"""One process of a multi-process run that records the global training batches the processes feed.

    python tests/multihost_batches.py OUT.npz --coordinator_address H:P --num_processes N --process_id I

Every process feeds its own rows of the first 3 batches of configs/tiny.py; the global batches
are gathered and process 0 saves them ("image" [3, B, H, W, C], "label" [3, B]) to OUT.npz.
"""

import argparse

import numpy as np

from vscjax import multihost

NUM_STEPS = 3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--coordinator_address")
    parser.add_argument("--num_processes", type=int)
    parser.add_argument("--process_id", type=int)
    args = parser.parse_args()
    multihost.initialize(args.coordinator_address, args.num_processes, args.process_id)
    from jax.experimental import multihost_utils

    from helpers import load_config
    from vscjax import data, train

    trainer = train.Trainer(load_config("tiny"))
    batches = data.batch_iterator(trainer.train_data, trainer.sampler(), start_step=0,
                                  sharding=trainer.batch_sharding)
    with batches:
        gathered = [multihost_utils.process_allgather(batch, tiled=True)
                    for _, (_, batch) in zip(range(NUM_STEPS), batches)]
    if multihost.is_writer():
        np.savez(args.out, image=np.stack([g["image"] for g in gathered]),
                 label=np.stack([g["label"] for g in gathered]))
    multihost.finish()


if __name__ == "__main__":
    main()
