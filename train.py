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

from vscjax import cli, multihost
from vscjax.config import check_is_config, describe_file_failure, line_of_failure

_HERE = os.path.dirname(os.path.abspath(__file__))
_CONFIGS = os.path.join(_HERE, "configs")
_DEFAULT_CONFIG = os.path.join(_CONFIGS, "default.py")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, f"Training configuration file (default: {_DEFAULT_CONFIG}).")
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
        sys.exit(f"train.py: unexpected arguments: {' '.join(argv[1:])}; flags look like "
                 "--name=value (see --help)")
    logging.set_verbosity(logging.WARNING)
    from jax.errors import JaxRuntimeError

    from vscjax import train
    from vscjax.checkpoints import CheckpointMismatchError
    from vscjax.config import ConfigError
    from vscjax.data import DataError
    from vscjax.lock import WorkdirBusyError
    from vscjax.workdir import WorkdirFileError

    try:  # before anything starts a JAX backend
        multihost.initialize(_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                             heartbeat_timeout=_HEARTBEAT_TIMEOUT.value)
    except multihost.MultihostError as err:
        sys.exit(f"train.py: {err}")
    config_file = flags.FLAGS["config"].config_filename
    config_name = os.path.splitext(os.path.basename(config_file))[0]
    workdir = _WORKDIR.value or os.path.join("workdir", config_name)
    try:
        check_is_config(_CONFIG.value, f"config file {config_file}: get_config()")
        with cli.held_back_background_errors():
            summary = train.run(_CONFIG.value, workdir)
    except (ConfigError, DataError, CheckpointMismatchError, train.NonFiniteLossError,
            WorkdirBusyError, WorkdirFileError) as err:
        sys.exit(f"train.py: {err}")
    except OSError as err:
        if err.filename is None:  # a library's write that names no file: it was in the workdir
            err.filename = os.path.abspath(workdir)
        sys.exit(f"train.py: {cli.os_error_line(err)} (--workdir); a rerun resumes from the last "
                 "checkpoint saved")
    except JaxRuntimeError as err:  # with several processes, often a lost peer: say which
        multihost.collective_failed(err)
        raise
    if multihost.is_writer():
        print(train.summarise(summary))
        print(f"outputs in {os.path.abspath(workdir)}")
    multihost.finish()


def _config_file(argv) -> str | None:
    """The value of the last ``--config`` in ``argv`` (None if there is none)."""
    path = None
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
    return path


def _parse_flags(argv):
    """absl flag parsing, with every bad flag, config file or ``--config.key=value`` reported
    in one line (the config file is loaded here, with its overrides)."""
    path = _config_file(argv)
    if path is None:  # the default config; its overrides are read from sys.argv
        argv = sys.argv = [argv[0], f"--config={_DEFAULT_CONFIG}", *argv[1:]]
        path = _DEFAULT_CONFIG
    file = path if os.path.exists(path) or ":" not in os.path.basename(path) else path.rsplit(":", 1)[0]
    if not os.path.isfile(file):
        shipped = ", ".join(sorted(name for name in os.listdir(_CONFIGS) if name.endswith(".py")))
        sys.exit(f"train.py: config file not found: {file}; the configs in {_CONFIGS}: {shipped}")
    try:
        return flags.FLAGS(argv)
    except Exception as err:  # noqa: BLE001  whatever the file or a flag raised: one line
        if line_of_failure(file, err) is not None:
            sys.exit(f"train.py: {describe_file_failure(file, err)}")
        if isinstance(err, AttributeError) and "get_config" in str(err):
            sys.exit(f"train.py: config file {file} has no get_config() function")
        message = re.sub(r"\\?'", "", str(err)).replace("\\n", ": ").replace("\n", ": ")
        sys.exit(f"train.py: bad flag or config override: {message}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
