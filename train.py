"""Train vscjax: ``python train.py [--config configs/<name>.py] [--config.key=value ...] [--workdir W]``.

With no arguments it trains plain VSC on scikit-learn's embedded digits (configs/default.py)
into ./workdir/default. Rerunning the same command resumes from the newest checkpoint.
A run of several processes gives every process the same command plus
``--coordinator_address host:port --num_processes N --process_id I`` (Cloud TPU and SLURM need
none of the three).
"""

import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from vscjax import multihost

_HERE = os.path.dirname(os.path.abspath(__file__))
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_HERE, "configs", "default.py"), "Training configuration file.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output folder (checkpoints, metrics, plots); default ./workdir/<config name>.")
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, multihost.FLAG_HELP["coordinator_address"])
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, multihost.FLAG_HELP["num_processes"])
_PROCESS_ID = flags.DEFINE_integer("process_id", None, multihost.FLAG_HELP["process_id"])
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout", multihost.DEFAULT_HEARTBEAT_TIMEOUT, multihost.FLAG_HELP["heartbeat_timeout"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    from vscjax import train

    try:  # before anything starts a JAX backend
        multihost.initialize(_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                             heartbeat_timeout=_HEARTBEAT_TIMEOUT.value)
    except multihost.MultihostError as err:
        sys.exit(f"train.py: {err}")
    config_name = os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0]
    workdir = _WORKDIR.value or os.path.join("workdir", config_name)
    from jax.errors import JaxRuntimeError

    from vscjax.checkpoints import CheckpointMismatchError
    from vscjax.config import ConfigError
    from vscjax.data import DataError

    try:
        summary = train.run(_CONFIG.value, workdir)
    except (ConfigError, DataError, CheckpointMismatchError, train.NonFiniteLossError, OSError) as err:
        sys.exit(f"train.py: {err}")
    except JaxRuntimeError as err:  # with several processes, often a lost peer: say which
        multihost.collective_failed(err)
        raise
    if multihost.is_writer():
        print(train.summarise(summary))
        print(f"outputs in {os.path.abspath(workdir)}")
    multihost.finish()


def _parse_flags(argv):
    """absl flag parsing, with a bad ``--config.key=value`` reported in one line."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as err:
        message = re.sub(r"\\?'", "", str(err)).replace("\\n", ": ").replace("\n", ": ")
        sys.exit(f"train.py: bad flag or config override: {message}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
