"""The report's tables are its stored rows, read under the current names of their numbers."""

import os
import re

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
    assert set(tables) == {"mnist", "fashion_mnist", "large_latent", "targets"}
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
