"""Files replaced whole: every writer of the project leaves the old file or the new one, never a
cut one, when the disk fills half-way through a write (the failure is injected)."""

import errno
import io
import json
import os

import numpy as np
import pytest

from helpers import load_config
from vscjax import atomic, codes, plots, train
from vscjax import workdir as files


class _DiskFullHalfway(io.RawIOBase):
    """A file whose first write puts half of its bytes on the disk, then fails: ENOSPC."""

    def __init__(self, handle: int):
        self.handle = handle

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        os.write(self.handle, data[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self) -> None:
        if not self.closed:
            os.close(self.handle)
        super().close()


@pytest.fixture
def disk_full_halfway(monkeypatch):
    """Every file ``atomic.replace_file`` opens fills the disk half-way through its first write."""

    def fdopen(handle, mode="r", *args, **kwargs):
        raw = _DiskFullHalfway(handle)
        return io.TextIOWrapper(raw, write_through=True) if "b" not in mode else raw

    monkeypatch.setattr(atomic.os, "fdopen", fdopen)


def _snapshot(folder) -> dict:
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


@pytest.mark.parametrize("writer", ["write_text_atomic", "write_json_atomic"])
def test_a_write_cut_by_a_full_disk_leaves_the_old_file_and_names_it(tmp_path, disk_full_halfway, writer):
    path = str(tmp_path / "summary.json")
    with open(path, "w") as f:
        f.write('{"step": 1}')
    with pytest.raises(OSError) as raised:
        getattr(atomic, writer)(path, '{"step": 2, "longer": "content"}')
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == path
    assert _snapshot(tmp_path) == {"summary.json": b'{"step": 1}'}  # no temporary file left


def test_every_workdir_writer_goes_through_replace_file(tmp_path, disk_full_halfway):
    """config.json, dataset.json, summary.json, eval.json, the codes and a plot: each either
    keeps its previous contents or is absent after a failed write (a writer that wrote in place
    would have cut the old file)."""
    workdir = str(tmp_path)
    old = {name: b"previous contents" for name in
           ("config.json", "dataset.json", "summary.json", "eval_validation.json", "codes_test.npz",
            "curves.png")}
    for name, content in old.items():
        (tmp_path / name).write_bytes(content)
    some_codes = codes.Codes(mu=np.zeros((2, 3), np.float32), logvar=np.zeros((2, 3), np.float32),
                             gamma=np.ones((2, 3), np.float32), spikes=True)
    writes = [
        lambda: files.write_config(workdir, load_config("tiny")),
        lambda: files.write_dataset_info(workdir, "digits", (8, 8, 1), 10),
        lambda: files.write_summary(workdir, {"step": 3}),
        lambda: files.write_results(workdir, "validation", {"step": 3}),
        lambda: codes.save_codes(files.codes_path(workdir, "test"), some_codes, np.zeros(2), "test"),
        lambda: plots.training_curves([{"split": "train", "step": 1, "loss": 1.0}],
                                      str(tmp_path / "curves.png")),
    ]
    for write in writes:
        with pytest.raises(OSError):
            write()
    assert _snapshot(tmp_path) == old


def test_a_failed_rename_leaves_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "summary.json")
    atomic.write_json_atomic(path, {"step": 1})

    def refuse(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(OSError) as raised:
        atomic.write_json_atomic(path, {"step": 3})
    assert raised.value.filename == path and raised.value.errno == errno.EROFS
    assert json.load(open(path)) == {"step": 1} and os.listdir(tmp_path) == ["summary.json"]


def test_two_writers_of_one_file_never_mix(tmp_path):
    """Interleaved writers each have a temporary file of their own: the file ends whole, the
    last rename's (a shared temporary name would mix or lose them)."""
    path = str(tmp_path / "eval.json")
    with atomic.replace_file(path) as first, atomic.replace_file(path) as second:
        first.write('{"writer": 1, "padding": "' + "x" * 100 + '"}')
        second.write('{"writer": 2}')
    assert json.load(open(path)) == {"writer": 1, "padding": "x" * 100}
    assert os.listdir(tmp_path) == ["eval.json"]


def test_a_new_file_gets_the_permissions_open_would_give(tmp_path):
    """Not 0600 (a temporary file's): others may read the results as they could before."""
    umask = os.umask(0o022)
    try:
        atomic.write_text_atomic(str(tmp_path / "results.json"), "{}")
    finally:
        os.umask(umask)
    assert os.stat(tmp_path / "results.json").st_mode & 0o777 == 0o644


def test_a_metrics_line_cut_by_a_full_disk_is_taken_back(tmp_path, monkeypatch):
    """metrics.jsonl is appended a line at a time; a write that fails half-way leaves the file
    with whole lines only, and the error names it."""
    log = train.MetricsLog(str(tmp_path))
    log.write("train", 1, {"loss": 2.0})
    real_write = os.write

    def half_then_full(handle, data):
        if handle != log._fd:
            return real_write(handle, data)
        real_write(handle, bytes(data)[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(train.os, "write", half_then_full)
    with pytest.raises(OSError) as raised:
        log.write("train", 2, {"loss": 1.0})
    monkeypatch.undo()
    log.close()
    assert raised.value.filename == files.metrics_path(str(tmp_path))
    text = open(files.metrics_path(str(tmp_path))).read()
    assert text.endswith("\n") and [json.loads(line)["step"] for line in text.splitlines()] == [1]
