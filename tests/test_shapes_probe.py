"""reports/shapes_probe.py on a short shapes run: its bound is the trainer's, its files exist."""

import json

import numpy as np
import pytest

from helpers import load_config
from reports import shapes_probe
from vscjax import shapes, train


def test_probe_scores_a_shapes_run_and_refuses_other_data(tmp_path, capsys):
    config = load_config("tiny", data__source="shapes", data__name="shapes-4", train__num_steps=10,
                         train__batch_size=40, data__balanced=True, model__prior="class_mask")
    summary = train.run(config, str(tmp_path / "shapes"))
    shapes_probe.main([str(tmp_path / "shapes")])
    result = json.load(open(tmp_path / "shapes" / "factors_validation.json"))
    # The same images, noise and batches as the run's own final validation evaluation.
    assert result["bound"] == pytest.approx(summary["exact_neg_elbo"], rel=1e-6)
    assert [f["name"] for f in result["factors"]][:3] == ["x", "y", "scale"]
    assert np.shape(result["normalized_mi"]) == (len(shapes.FACTOR_NAMES), 16) and result["step"] == 10
    assert (tmp_path / "shapes" / "plots" / "factor_mi_validation.png").stat().st_size > 1000
    assert "cross_arm_width" in capsys.readouterr().out
    train.run(load_config("tiny", train__num_steps=2), str(tmp_path / "digits"))
    with pytest.raises(SystemExit, match="shapes_probe.py: .* was trained on data.source = 'digits'"):
        shapes_probe.main([str(tmp_path / "digits")])
