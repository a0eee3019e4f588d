"""Test set-up: 8 fake CPU devices, set before JAX starts, so sharded code is exercised; the
real data sets from ``../shared/data`` (every developer and CI run has it there), so no test
downloads anything unless it starts its own mirror."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (must come after XLA_FLAGS)
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", False)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")
if os.path.isdir(SHARED_DATA) and not os.environ.get("VSCJAX_DATA_DIR"):
    os.environ["VSCJAX_DATA_DIR"] = SHARED_DATA


@pytest.fixture(scope="session")
def mnist_dir():
    """Directory of the real MNIST IDX files ($VSCJAX_DATA_DIR/mnist)."""
    path = os.path.join(os.environ.get("VSCJAX_DATA_DIR", SHARED_DATA), "mnist")
    if not os.path.exists(os.path.join(path, "train-images-idx3-ubyte.gz")):
        pytest.skip(f"MNIST IDX files not found in {path}")
    return path


def pytest_collection_modifyitems(config, items):
    """In CI (the environment variable CI set) tests marked ``grid`` are skipped unless ``-m``
    selects them: each is one case of a grid whose representative cases run everywhere, and
    the whole grid runs with ``python -m pytest -m grid`` (about half an hour on 2 cores)."""
    if not os.environ.get("CI") or config.getoption("markexpr"):
        return
    skip = pytest.mark.skip(reason="a case of a grid whose representatives run in CI "
                                   "(the whole grid: python -m pytest -m grid)")
    for item in items:
        if "grid" in item.keywords:
            item.add_marker(skip)
