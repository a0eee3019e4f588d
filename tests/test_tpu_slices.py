"""reports/tpu_slices.py: the largest-latent search (on a made-up memory curve, no compiler)
and the README's TPU tables, which must be the tables of reports/tpu_slices.json."""

import os
import re
import sys

import pytest

from helpers import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "reports"))
import tpu_slices  # noqa: E402

GIB = 2**30
LARGEST = 500_000  # where the made-up curve reaches the chip's 16 GiB


def _search(monkeypatch, power):
    """The search over HBM needed = 16 GiB (L / LARGEST) ** power; the L it compiled."""
    compiled = []

    def needed(latent_dim, dtype, align, topology, log):
        compiled.append(latent_dim)
        n = int(16 * GIB * (latent_dim / LARGEST) ** power)
        return n, {"estimated_step_seconds": 1e-3, "predicted_samples_per_second": 1.0}

    monkeypatch.setattr(tpu_slices, "hbm_per_chip", lambda topology: 16 * GIB)
    monkeypatch.setattr(tpu_slices, "_needed", needed)
    return tpu_slices.largest_latent("float32", "off", "v5e:4x4", log=lambda line: None), compiled


@pytest.mark.parametrize("power", [1.1, 0.9])  # the line through the probes over- / under-shoots
def test_the_search_finds_the_largest_latent_to_within_one_percent(monkeypatch, power):
    row, compiled = _search(monkeypatch, power)
    largest, above = row["largest_latent_dim"], row["next_latent_dim"]
    assert largest <= LARGEST < above  # one that fits, and a larger one that does not
    assert above - largest <= max(tpu_slices.STEP, 0.01 * largest)
    assert largest % tpu_slices.STEP == 0 and above % tpu_slices.STEP == 0
    assert row["hbm_needed_bytes"] <= 16 * GIB < row["next_needs_bytes"]
    assert len(compiled) <= 12  # bisection, not a walk of 1,024 at a time


def _section(name):
    text = open(os.path.join(REPO_ROOT, "README.md")).read()
    match = re.search(rf"<!-- report:{name} -->\n(.*?)<!-- /report:{name} -->", text, re.S)
    assert match, name
    return match.group(1).strip("\n").split("\n")


def test_the_readme_tpu_tables_are_those_of_tpu_slices_json():
    record = tpu_slices.merged([os.path.join(REPO_ROOT, "reports", "tpu_slices.json")])
    topology = record["topology"]
    assert _section("tpu_configs") == tpu_slices.config_table(record["configs"], topology)
    assert _section("tpu_largest_latent") == tpu_slices.latent_table(record["largest_latent"], topology)
    assert _section("tpu_latent_split") == tpu_slices.split_table(record["latent_split"], topology)
    assert {r["config"] for r in record["configs"]} == set(tpu_slices.shipped_configs())
