"""Train vscjax: ``python train.py [--config configs/<name>.py] [--config.key=value ...] [--workdir W]``.

With no arguments it trains plain VSC on scikit-learn's embedded digits (configs/default.py)
into ./workdir/default. Rerunning the same command resumes from the newest checkpoint.
"""

import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_HERE = os.path.dirname(os.path.abspath(__file__))
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_HERE, "configs", "default.py"), "Training configuration file.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output folder (checkpoints, metrics, plots); default ./workdir/<config name>.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    from vscjax import sharding, train

    sharding.initialize_distributed()
    config_name = os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0]
    workdir = _WORKDIR.value or os.path.join("workdir", config_name)
    from vscjax.checkpoints import CheckpointMismatchError
    from vscjax.config import ConfigError
    from vscjax.data import DataError

    try:
        summary = train.run(_CONFIG.value, workdir)
    except (ConfigError, DataError, CheckpointMismatchError, train.NonFiniteLossError, OSError) as err:
        sys.exit(f"train.py: {err}")
    print(train.summarise(summary))
    print(f"outputs in {os.path.abspath(workdir)}")


def _parse_flags(argv):
    """absl flag parsing, with a bad ``--config.key=value`` reported in one line."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as err:
        message = re.sub(r"\\?'", "", str(err)).replace("\\n", ": ").replace("\n", ": ")
        sys.exit(f"train.py: bad flag or config override: {message}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
