"""Real multi-annotator data: the two Mixtral AlpacaEval judges rated the same
805 pairs and agree on 720 of them (../shared/data/README.md)."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import call_command

from annotate.models import Project
from annotate.services.imports import comparisons_import
from annotate.services.reports import agreement_report
from tests.annotate.test_agreement import ref_alpha, ref_fleiss
from tests.conftest import ALPACA_DIR

pytestmark = pytest.mark.django_db
JUDGES = sorted(ALPACA_DIR.glob("Mixtral-8x7B-Instruct-v0.1.*.annotations.json.gz"))


@pytest.fixture
def mixtral() -> Project:
    assert len(JUDGES) == 2, f"expected the two Mixtral judge files in {ALPACA_DIR}"
    cache.clear()
    for path in JUDGES:
        comparisons_import(
            project_slug="mixtral", path=path, fmt="alpaca-eval", with_judgments=True
        )
    return Project.objects.get(slug="mixtral")


def test_overall_pairwise_agreement_is_720_of_805(mixtral) -> None:
    report = agreement_report(project=mixtral)
    fig = report["axes"]["overall"]["pairwise_agreement"]
    assert fig["value"] == 720 / 805
    assert fig["n_pairs"] == 805 and fig["n_comparisons"] == 805
    assert fig["ci95"][0] < 720 / 805 < fig["ci95"][1]
    assert {u["username"] for u in report["annotators"]} == {
        "alpaca_eval_gpt4_turbo_fn",
        "alpaca_eval_cot_gpt4_turbo_fn",
    }
    (pair,) = report["axes"]["overall"]["cohen_kappa"]["pairs"]
    assert pair["shared"] == 805
    # The imported verdicts carry no timing: no time quartiles, no median time.
    assert report["axes"]["overall"]["agreement_by_time_quartile"] == []
    assert report["summary"]["median_seconds"] is None


def test_coefficients_match_the_libraries_on_the_imported_judgments(mixtral) -> None:
    from annotate.services.reports import judgments_frame

    frame = judgments_frame(project=mixtral)
    overall = agreement_report(project=mixtral)["axes"]["overall"]
    assert overall["krippendorff_alpha_nominal"] == pytest.approx(
        ref_alpha(frame, "overall"), abs=1e-12
    )
    assert overall["krippendorff_alpha_ordinal"] == pytest.approx(
        ref_alpha(frame, "overall", "ordinal"), abs=1e-12
    )
    assert overall["fleiss_kappa"]["value"] == pytest.approx(
        ref_fleiss(frame, "overall"), abs=1e-12
    )
    # The judges are known to favour length: most decided verdicts pick the longer answer.
    assert overall["longer_chosen_rate"]["ci95"][0] > 0.5 and overall["len_logit_coef"] > 0


def test_agreement_command_prints_the_same_figure(mixtral) -> None:
    out = StringIO()
    call_command("agreement", "mixtral", "--json", stdout=out)
    document = json.loads(out.getvalue())
    assert document["axes"]["overall"]["pairwise_agreement"]["value"] == 720 / 805
    text = StringIO()
    call_command("agreement", "mixtral", stdout=text)
    assert "pairwise_agreement             0.894" in text.getvalue()
