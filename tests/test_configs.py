"""The configs' docstrings: a command and settings, never a measured number written by hand
(those drift; they live in the README tables, reports/results.json and reports/sweeps/)."""

import ast
import glob
import os
import re

import pytest

from helpers import REPO_ROOT

CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "*.py")))
# What a result looks like, not a setting (alpha 0.01, weight 5, 10,000 steps): a number in nats,
# a percentage or a time, or a decimal of three places (0.475) or of two above 1 (113.19).
MEASURED = re.compile(r"\d[\d,.]*\s*(nats|%|seconds?|minutes?|hours?)\b"
                      r"|\b\d+\.\d{3,}\b|\b[1-9]\d*\.\d{2}\b")


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_docstrings_state_no_measured_numbers(path):
    docstring = ast.get_docstring(ast.parse(open(path).read()))
    assert docstring and "python train.py" in docstring  # the command is there
    found = [m.group(0) for m in MEASURED.finditer(docstring)]
    assert not found, found
