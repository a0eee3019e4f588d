"""The report's tables are its stored rows, read under the current names of their numbers."""

import json
import os
import re

import pytest

from helpers import REPO_ROOT
from reports import make_report, sweep

RESULTS = os.path.join(REPO_ROOT, "reports", "results.json")


def _section(path: str, name: str) -> list[str]:
    """The lines between ``<!-- report:name -->`` and ``<!-- /report:name -->``."""
    pattern = rf"<!-- report:{name} -->\n(.*?)\n<!-- /report:{name} -->"
    return re.search(pattern, open(path).read(), re.S).group(1).split("\n")


def test_the_readme_tables_are_the_rows_of_results_json():
    results = make_report.read_results(RESULTS)
    tables = make_report.sections(results)
    shapes = {"shapes", "shapes_factors", "shapes_targets"} if "shapes" in results else set()
    assert set(tables) == {"mnist", "fashion_mnist", "large_latent", "targets"} | shapes
    for name, lines in tables.items():
        assert _section(os.path.join(REPO_ROOT, "reports", "README.md"), name) == lines, name
    summary = _section(os.path.join(REPO_ROOT, "README.md"), "summary")
    assert summary == make_report.summary_table(results)


def test_the_summary_row_of_a_model_holds_its_numbers_on_both_data_sets():
    results = make_report.read_results(RESULTS)
    lines = make_report.summary_table(results)
    assert len(lines) == 2 + len(make_report.MODELS) + 1  # header, rule, models, L=16,384
    cp = {d: results[d]["class_prior"] for d in ("mnist", "fashion_mnist")}
    row = next(line for line in lines if line.startswith("| class-mask prior |"))
    assert row.split(" | ")[1:] == [
        f"{cp['mnist']['exact_neg_elbo']:.1f}",
        f"{cp['mnist']['jaccard_same']:.3f} / {cp['mnist']['jaccard_different']:.3f}",
        f"{100 * cp['mnist']['probe']:.1f}%",
        f"{cp['fashion_mnist']['exact_neg_elbo']:.1f}",
        f"{cp['fashion_mnist']['jaccard_same']:.3f} / {cp['fashion_mnist']['jaccard_different']:.3f}",
        f"{100 * cp['fashion_mnist']['probe']:.1f}% |"]
    large = lines[-1].split(" | ")
    assert large[0] == "| class-mask prior, L=16,384" and large[-3:] == ["n/a"] * 2 + ["n/a |"]


def test_rows_under_their_old_names_give_the_same_table():
    row = dict(exact_neg_elbo=125.04, fixed_prior_exact_neg_elbo=125.04, leak=None,
               expected_active=3.7, active_count=3.35, jaccard_same=0.135, jaccard_different=0.019,
               soft_same=0.216, soft_different=0.112, specific_same=0.135, specific_different=0.019,
               num_global=0, specific_count=[1, 1, 0], probe=0.936)
    renamed = ("exact_neg_elbo", "fixed_prior_exact_neg_elbo", "active_count")
    old_row = {name: value for name, value in row.items() if name not in renamed}
    old_row.update(bound=125.04, fixed_prior=125.04, confident=3.35)  # as results.json had them
    assert make_report.current_names(old_row) == row
    assert make_report.results_table({"VSC": make_report.current_names(old_row)}) == \
        make_report.results_table({"VSC": row})


def test_a_sweep_row_names_each_number_as_the_evaluation_does():
    results = {
        "elbo": {"exact_neg_elbo": 110.2, "fixed_prior_exact_neg_elbo": 140.2, "leak": None},
        "sparsity": {"expected_active": 11.2, "active_count": 11.3},
        "class_consistency": {name: {"same": 0.742, "different": 0.453} for name in
                              ("jaccard", "soft_jaccard", "class_specific_jaccard")},
        "class_activation": {"num_global": 2, "specific_count": [1, 0, 3]},
        "linear_probe": {"accuracy": 0.944},
    }
    row = sweep.row("objective.alpha=0.05", results)
    assert row["exact_neg_elbo"] == 110.2 and row["active_count"] == 11.3
    assert row["classes_with_specific"] == 2
    assert sweep.markdown([row]).splitlines()[-1] == (
        "| objective.alpha=0.05 | 110.20 | 140.20 | n/a | 11.2 | 11.3 | 0.742 / 0.453 | 2 | 2 | 94.4% |")


def test_a_sweep_of_a_data_set_with_known_factors_shows_their_columns():
    """With a factors section in eval.json, the row carries MIG and the captured / placed counts
    per kind, and the table gains their columns (n/a in a row without them)."""
    results = {
        "elbo": {"exact_neg_elbo": 60.0, "fixed_prior_exact_neg_elbo": 61.0, "leak": None},
        "sparsity": {"expected_active": 5.0, "active_count": 5.0},
        "class_consistency": None, "class_activation": None,
        "linear_probe": {"accuracy": 0.99},
        "factors": {"mig": 0.25, "dci_disentanglement": 0.5,
                    "counts": {"global": {"total": 4, "captured": 3, "placed": 2},
                               "class": {"total": 5, "captured": 1, "placed": 1}},
                    "dimension_kinds": [-1, 2, -2],
                    "factors": [{"name": "x", "nmi": 0.6, "captured": True, "placed": True, "best_dim": 0},
                                {"name": "hole", "nmi": 0.1, "captured": False, "placed": False,
                                 "best_dim": 1}]},
    }
    row = sweep.row("a", results)
    assert row["factors"]["global_placed"] == 2 and row["factors"]["class_total"] == 5
    assert [f["dimension"] for f in row["factors"]["factors"]] == ["global", "class 2"]
    plain = sweep.row("b", {**results, "factors": None})
    lines = sweep.markdown([row, plain]).splitlines()
    assert lines[0].endswith("| MIG | global factors captured / placed | class factors captured / placed |")
    assert lines[2].endswith("| 99.0% | 0.250 | 3 / 2 of 4 | 1 / 1 of 5 |")
    assert lines[3].endswith("| 99.0% | n/a | n/a | n/a |")
    assert "MIG" not in sweep.markdown([plain])


def test_a_sweep_names_the_commits_its_runs_were_trained_at(tmp_path):
    """From each run's summary.json: one commit, several, uncommitted changes, none recorded."""
    def run(name, git):
        os.makedirs(tmp_path / name)
        with open(tmp_path / name / "summary.json", "w") as f:
            json.dump({"provenance": {"git": git}}, f)
        return str(tmp_path / name)

    a = run("a", {"commit": "1234567890abcdef", "dirty": False})
    b = run("b", {"commit": "1234567890abcdef", "dirty": False})
    c = run("c", {"commit": "fedcba0987654321", "dirty": True})
    d = run("d", {"commit": None, "dirty": None})
    assert sweep.trained_at([a, b]) == "Trained at commit: 1234567."
    assert sweep.trained_at([a, c]) == "Trained at commits: 1234567, fedcba0 (with uncommitted changes)."
    assert sweep.trained_at([d]) == "Trained at commit: unknown."


def test_only_names_groups_and_single_rows():
    shapes = make_report.row_jobs(["shapes"], skip_large_latent=False)
    assert shapes == [("shapes", m) for m in make_report.SHAPES_MODELS] and len(shapes) == 10
    assert make_report.row_jobs(["fashion_mnist:class_prior", "shapes:vsc", "shapes"], False)[:3] == [
        ("fashion_mnist", "class_prior"), ("shapes", "vsc"), ("shapes", "vae")]
    every = make_report.row_jobs([], skip_large_latent=False)
    assert ("large_latent", "large_latent") in every and len(every) == 12 + 1 + 10
    assert ("large_latent", "large_latent") not in make_report.row_jobs([], skip_large_latent=True)
    with pytest.raises(SystemExit, match=r"^make_report.py: --only fashion:x: no group 'fashion'; the groups are"):
        make_report.row_jobs(["fashion:x"], False)
    with pytest.raises(SystemExit, match=r"^make_report.py: --only mnist:conv: no model 'conv' in mnist; its models are vae,"):
        make_report.row_jobs(["mnist:conv"], False)


def test_new_rows_are_merged_into_results_json_and_the_others_kept_as_they_are(tmp_path):
    """Rows of another group, and the other rows of the same group, keep their numbers and
    their (old) names; the new row and its provenance replace the old ones."""
    old = {"rows": {"mnist": {"vsc": {"bound": 125.0}, "vae": {"bound": 104.7}},
                    "large_latent": {"bound": 121.4}},
           "provenance": {"mnist_vsc": {"git": "a"}, "mnist_vae": {"git": "a"}}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(old))
    merged = make_report.merge_results(str(path), {"mnist": {"vsc": {"exact_neg_elbo": 124.0}},
                                                   "shapes": {"vae": {"exact_neg_elbo": 80.0}}},
                                       {"mnist_vsc": {"provenance": {"git": "b"}},
                                        "shapes_vae": {"provenance": {"git": "b"}}})
    assert merged["rows"] == {"mnist": {"vsc": {"exact_neg_elbo": 124.0}, "vae": {"bound": 104.7}},
                              "large_latent": {"bound": 121.4}, "shapes": {"vae": {"exact_neg_elbo": 80.0}}}
    assert merged["provenance"] == {"mnist_vsc": {"git": "b"}, "mnist_vae": {"git": "a"},
                                    "shapes_vae": {"git": "b"}}
    assert make_report.merge_results(str(tmp_path / "none.json"), {}, {}) == {"rows": {}, "provenance": {}}


def _shapes_row(bound, mig, global_placed, class_placed, nmi=0.5):
    factors = [dict(name=n, nmi=nmi, captured=True, placed=p, dimension="global")
               for n, p in (("x", True), ("hole", False))]
    return dict(exact_neg_elbo=bound, fixed_prior_exact_neg_elbo=bound, leak=None, expected_active=5.0,
                active_count=5.0, num_global=2, specific_count=[1, 0], probe=0.9,
                factors=dict(mig=mig, dci_disentanglement=0.4, global_total=4, global_captured=4,
                             global_placed=global_placed, class_total=5, class_captured=5,
                             class_placed=class_placed, factors=factors))


def test_shapes_tables_and_the_class_mask_priors_targets():
    """Targets met: every global factor placed, >= 4 class factors, more placed and a higher MIG
    than each of the others, a bound within 5 nats of plain VSC's; each missed by one step."""
    others = dict(vsc=_shapes_row(70.0, 0.10, 2, 0), centroid=_shapes_row(72.0, 0.12, 4, 2),
                  pairwise=_shapes_row(71.0, 0.11, 1, 0))
    met = make_report.shapes_tables({**others, "class_prior": _shapes_row(75.0, 0.2, 4, 4)})
    assert len(met["shapes_targets"]) == 2 + 5 and all(line.endswith("| met |") for line in met["shapes_targets"][2:])
    assert met["shapes"][2] == ("| VSC (fixed prior), MLP | 70.0 | 70.0 | 5.0 | 2 | 1 (1/2) | 90.0% | 0.100 | "
                                "0.400 | 4 / 2 of 4 | 5 / 0 of 5 |")
    assert met["shapes_factors"][0] == "| model | x | hole |"
    assert met["shapes_factors"][2] == "| VSC (fixed prior), MLP | 0.50 placed | 0.50 captured (global dim) |"
    missed = make_report.shapes_tables({**others, "class_prior": _shapes_row(75.1, 0.12, 3, 3)})
    assert all(line.endswith("| **missed** |") for line in missed["shapes_targets"][2:])
    assert missed["shapes_targets"][4] == ("| ... factors placed, against plain VSC, centroid, pairwise | "
                                           "6 vs 2, 6, 1 | more than each | **missed** |")
    assert make_report.shapes_tables(others)["shapes_targets"] == missed["shapes_targets"][:2]


def test_sweep_values_take_layer_sizes_as_tuples():
    grid = sweep.parse_assignments(["model.hidden=(400),(400,400)", "objective.alpha=0.1,0.25",
                                    "data.name=shapes"], multi=True)
    assert grid == {"model.hidden": [(400,), (400, 400)], "objective.alpha": [0.1, 0.25],
                    "data.name": ["shapes"]}
    assert sweep.parse_assignments(["model.hidden=(800, 400)"], multi=False) == {"model.hidden": (800, 400)}
    assert sweep.run_name({"model.hidden": (400, 400)}) == "model.hidden=(400, 400)"
