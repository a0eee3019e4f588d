"""Full and read-only disks under the command lines: one line naming the path and what to do,
exit status 1, and the files on disk left as the last good ones.

The real disks are tmpfs mounts in a user and mount namespace of our own (``unshare -r -m``,
no privileges needed where the kernel allows it; skipped elsewhere): a small one that fills
during training and is then enlarged (as a user frees space), and a read-only one. The
evaluation's full disk is injected in-process.
"""

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import REPO_ROOT, load_config
from vscjax import evaluate, faults, train

TINY = os.path.join(REPO_ROOT, "configs", "tiny.py")
SCRIPT = r"""
set -u
M="$1"; shift
mkdir -p "$M"
mount -t tmpfs -o size=300k tmpfs "$M" || exit 97
run() { "$@" > "$M.out" 2> "$M.err"; echo "$?"; }
train() { run "$PYTHON" "$REPO/train.py" --config "$REPO/configs/tiny.py" --workdir "$M/w" \
          --config.train.num_steps=40 --config.train.checkpoint_every=10; }
full=$(train); full_err=$(tail -c 2000 "$M.err"); committed=$(ls "$M/w/checkpoints" | grep -x '[0-9]*' | tr '\n' ' ')
mount -o remount,size=8m "$M"            # space freed
rerun=$(train); rerun_err=$(tail -c 2000 "$M.err"); summary=$(cat "$M/w/summary.json")
mount -o remount,ro "$M"
before=$(ls -lR --full-time "$M/w" | md5sum)
ro=$(train); ro_err=$(cat "$M.err")
ev=$(run "$PYTHON" -m vscjax.evaluate --workdir "$M/w" --no-plots --probe-train 100); ev_err=$(cat "$M.err")
after=$(ls -lR --full-time "$M/w" | md5sum)
"$PYTHON" - "$full" "$full_err" "$committed" "$rerun" "$rerun_err" "$summary" "$ro" "$ro_err" \
  "$ev" "$ev_err" "$before" "$after" <<'EOF'
import json, sys
keys = ["full", "full_err", "committed", "rerun", "rerun_err", "summary", "ro", "ro_err", "ev",
        "ev_err", "before", "after"]
print(json.dumps(dict(zip(keys, sys.argv[1:]))))
EOF
"""


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    check = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True)
    return check.returncode == 0


def _one_line(stderr: str, prefix: str) -> str:
    """The one line ``prefix: ...`` of a failed command (after any progress bar), no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    ours = [line for line in stderr.splitlines() if line.startswith(prefix)]
    others = [line for line in stderr.splitlines() if line.strip() and not line.startswith(prefix)
              and "step/s" not in line and "s/step" not in line]  # tqdm's bar
    assert len(ours) == 1 and not others, stderr[-3000:]
    return ours[0]


@pytest.mark.slow
@pytest.mark.skipif(not _namespaces_work(), reason="no unprivileged user and mount namespaces here")
def test_train_py_on_a_disk_that_fills_then_frees_and_on_a_read_only_one(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != faults.ENV}
    env.update(XLA_FLAGS="", PYTHON=sys.executable, REPO=REPO_ROOT, JAX_PLATFORMS="cpu")
    result = subprocess.run(["unshare", "-r", "-m", "sh", "-c", SCRIPT, "sh", str(tmp_path / "mnt")],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode == 97:
        pytest.skip("tmpfs cannot be mounted in a user namespace here")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    # A full disk: one line naming the folder, the checkpoints before it intact.
    assert out["full"] == "1"
    line = _one_line(out["full_err"], "train.py: ")
    assert "no space left on the disk of" in line and "a rerun resumes from the last checkpoint" in line
    committed = [int(step) for step in out["committed"].split()]
    # Space freed: the rerun resumes from the newest checkpoint the full disk left and finishes.
    assert out["rerun"] == "0", out["rerun_err"]
    summary = json.loads(out["summary"])
    assert summary["step"] == 40 and summary["resumed_from"] == (max(committed) if committed else None)
    # Read-only: both command lines stop in one line; nothing in the workdir changed.
    assert out["ro"] == "1" and "is on a read-only file system" in _one_line(out["ro_err"], "train.py: ")
    assert out["ev"] == "1"
    assert "is on a read-only file system" in _one_line(out["ev_err"], "vscjax.evaluate: ")
    assert out["before"] == out["after"]


def test_evaluate_on_a_full_disk_keeps_the_previous_results(tmp_path, monkeypatch, capsys):
    """The disk fills half-way through eval_validation.json: one line naming it, exit status 1,
    and the previous results stay whole."""
    workdir = str(tmp_path / "w")
    train.run(load_config("tiny", train__num_steps=2), workdir)
    previous = {"an earlier": "evaluation"}
    path = os.path.join(workdir, "eval_validation.json")
    json.dump(previous, open(path, "w"))
    monkeypatch.setattr("vscjax.atomic.os.fdopen", _full_disk_fdopen)
    with pytest.raises(SystemExit) as raised:
        evaluate.main(["--workdir", workdir, "--split", "validation", "--no-plots", "--probe-train", "100"])
    message = str(raised.value.code)
    assert message.startswith("vscjax.evaluate: no space left on the disk of ") and path in message
    assert "\n" not in message and json.load(open(path)) == previous
    assert sorted(name for name in os.listdir(workdir) if name.startswith(".")) == []  # no temporary


def _full_disk_fdopen(handle, mode="r", *args, **kwargs):
    os.close(handle)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
