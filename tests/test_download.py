"""Data on first use: downloads from a local mirror of ../shared/data that each test starts."""

import collections
import gzip
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import SHARED_DATA
from helpers import REPO_ROOT
from vscjax import data, download

LABELS = "t10k-labels-idx1-ubyte.gz"  # the smallest file: the one the fault tests fetch


class Mirror:
    """A threaded HTTP server of the files under ``root``, counting requests by path.

    ``faults[path]`` lists what the next responses for ``path`` do instead of serving the file:
    "truncate" (announce the whole length, send half, close the connection), "short" (a file
    cut in half, its own length announced) or "garble" (a valid gzip file of other content).
    """

    def __init__(self, root: str):
        self.root = root
        self.requests = collections.Counter()
        self.faults = collections.defaultdict(list)
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802  (the name http.server calls)
                mirror.requests[self.path] += 1
                path = os.path.join(mirror.root, self.path.lstrip("/"))
                if not os.path.isfile(path):
                    self.send_error(404)
                    return
                with open(path, "rb") as f:
                    body = f.read()
                fault = mirror.faults[self.path].pop(0) if mirror.faults[self.path] else None
                length = len(body)
                if fault == "short":
                    body = body[: len(body) // 2]
                    length = len(body)
                elif fault == "garble":
                    body = gzip.compress(b"\x00" * 10_008)
                    length = len(body)
                elif fault == "truncate":
                    body = body[: len(body) // 2]
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args):  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        """The base URL of data set ``name`` on this mirror."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror():
    """A local mirror of ../shared/data (skipped where the folder is missing)."""
    if not os.path.isfile(os.path.join(SHARED_DATA, "mnist", LABELS)):
        pytest.skip(f"no MNIST files in {SHARED_DATA}")
    server = Mirror(SHARED_DATA)
    yield server
    server.close()


def _all_but_labels(folder):
    """``folder`` with the MNIST files but the test labels (the one left to download)."""
    os.makedirs(folder)
    for stem in download.STEMS:
        if stem + ".gz" != LABELS:
            shutil.copy(os.path.join(SHARED_DATA, "mnist", stem + ".gz"), folder)
    return str(folder)


def _leftovers(folder) -> list[str]:
    return [name for name in os.listdir(folder) if name.endswith(".part")]


def test_published_checksums_are_those_of_the_shared_files():
    """The sha256 values vscjax checks are those of the real data's uncompressed content."""
    for name, dataset in download.KNOWN.items():
        folder = os.path.join(SHARED_DATA, name)
        if not os.path.isdir(folder):
            pytest.skip(f"no {name} in {SHARED_DATA}")
        for stem, sha256 in dataset.sha256.items():
            assert download._content_problem(os.path.join(folder, stem + ".gz"), sha256) == "", stem


def test_first_use_downloads_into_the_cache_then_reads_without_a_request(mirror, tmp_path, monkeypatch):
    monkeypatch.delenv("VSCJAX_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    test = data.load("idx", "mnist", "test", mirror=mirror.url("mnist"))
    folder = tmp_path / "cache" / "vscjax" / "mnist"
    assert sorted(os.listdir(folder)) == sorted(stem + ".gz" for stem in download.STEMS)
    assert set(mirror.requests) == {f"/mnist/{stem}.gz" for stem in download.STEMS}
    assert set(mirror.requests.values()) == {1}
    expected = data.load_idx(os.path.join(SHARED_DATA, "mnist"), "test")
    np.testing.assert_array_equal(test.images, expected.images)
    np.testing.assert_array_equal(test.labels, expected.labels)
    before = sum(mirror.requests.values())
    data.load("idx", "mnist", "train", mirror=mirror.url("mnist"))
    assert sum(mirror.requests.values()) == before  # cached: nothing asked of the mirror


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_downloaded_files_get_the_permissions_of_the_umask(mirror, tmp_path, umask):
    """A data folder shared by several users (umask 022) gets files they can read; a private
    umask keeps them private."""
    folder = _all_but_labels(tmp_path / "mnist")
    previous = os.umask(umask)
    try:
        download.ensure_idx_files("mnist", folder, mirror.url("mnist"))
    finally:
        os.umask(previous)
    assert oct(os.stat(os.path.join(folder, LABELS)).st_mode & 0o777) == oct(0o666 & ~umask)


@pytest.mark.parametrize("fault", ["truncate", "short", "garble"])
def test_a_broken_download_is_never_used_and_is_retried(mirror, tmp_path, fault):
    folder = _all_but_labels(tmp_path / "mnist")
    mirror.faults[f"/mnist/{LABELS}"] = [fault]
    download.ensure_idx_files("mnist", folder, mirror.url("mnist"))
    assert mirror.requests[f"/mnist/{LABELS}"] == 2  # the broken one, then a good one
    with open(os.path.join(folder, LABELS), "rb") as ours, \
            open(os.path.join(SHARED_DATA, "mnist", LABELS), "rb") as theirs:
        assert ours.read() == theirs.read()
    assert not _leftovers(folder)


def test_a_file_that_never_matches_its_checksum_is_not_placed(mirror, tmp_path):
    folder = _all_but_labels(tmp_path / "mnist")
    mirror.faults[f"/mnist/{LABELS}"] = ["garble"] * download.ATTEMPTS
    with pytest.raises(data.DataError) as info:
        data.load("idx", "mnist", "test", data_dir=folder, mirror=mirror.url("mnist"))
    message = str(info.value)
    assert "\n" not in message
    assert f"{mirror.url('mnist')}/{LABELS}" in message and "sha256" in message and folder in message
    assert mirror.requests[f"/mnist/{LABELS}"] == download.ATTEMPTS
    assert not os.path.exists(os.path.join(folder, LABELS)) and not _leftovers(folder)


def test_offline_names_the_url_and_the_folder(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = str(tmp_path / "fashion_mnist")
    with pytest.raises(data.DataError) as info:
        data.load("idx", "fashion_mnist", "test", data_dir=folder, mirror=f"http://127.0.0.1:{port}")
    message = str(info.value)
    assert "\n" not in message
    assert f"http://127.0.0.1:{port}/train-images-idx3-ubyte.gz" in message
    assert f"into {folder} by hand" in message
    assert not _leftovers(folder)


def test_a_missing_file_on_the_mirror_is_named(mirror, tmp_path):
    with pytest.raises(data.DataError, match=r"HTTP 404.*by hand"):
        data.load("idx", "mnist", "test", data_dir=str(tmp_path / "m"), mirror=mirror.url("nothing"))


def test_a_bad_mirror_value_is_refused_by_name():
    from helpers import load_config
    from vscjax.config import ConfigError, validate

    with pytest.raises(ConfigError, match="data.mirror"):
        validate(load_config("tiny", data__mirror="storage.example.com/mnist"), 1)


@pytest.mark.slow
def test_train_py_downloads_trains_and_evaluates_mnist(mirror, tmp_path):
    """A fresh machine: train.py --config configs/mnist.py with nothing but a mirror."""
    env = {**os.environ, "VSCJAX_DATA_DIR": str(tmp_path / "data"), "XLA_FLAGS": ""}
    done = subprocess.run(
        [sys.executable, "train.py", "--config", "configs/mnist.py", "--workdir", str(tmp_path / "w"),
         "--config.train.num_steps=5", "--config.train.log_every=5", f"--config.data.mirror={mirror.url('mnist')}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "validation exact -ELBO" in done.stdout
    assert sorted(os.listdir(tmp_path / "data" / "mnist")) == sorted(s + ".gz" for s in download.STEMS)
