"""The lead dashboard and the disagreement queue, through the Django test client."""

from __future__ import annotations

import csv
import io
import re

import pytest
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from django.urls import reverse

from annotate.models import Comparison, Membership
from annotate.services.assignments import assignment_next
from annotate.services.reports import agreement_report, comparison_resolve, comparison_send_back
from tests.annotate.test_agreement_command import judge
from tests.factories import ComparisonFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db
HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


@pytest.fixture
def data(project, lee):
    cache.clear()
    project.overlap = 2
    project.save()
    users = [UserFactory(username=n) for n in ("zed", "amy", "=cmd()")]
    split = ComparisonFactory(
        project=project, external_id="split", response_a=HOSTILE, slots_taken=2
    )
    judge(
        split,
        users[0],
        -2,
        axes={"helpful": "A"},
        rationale=f"A is fine {HOSTILE}",
        flags=["unsafe"],
    )
    judge(split, users[1], 3, axes={"helpful": "B"}, swapped=True, over_budget=True)
    tie = ComparisonFactory(project=project, external_id="with-tie", slots_taken=2)
    judge(tie, users[0], -1)
    judge(tie, users[2], 0)
    same = ComparisonFactory(project=project, external_id="unanimous", slots_taken=2)
    judge(same, users[1], 1)
    judge(same, users[2], 2)
    client = Client()
    client.force_login(lee)
    return {
        "project": project,
        "users": users,
        "split": split,
        "tie": tie,
        "same": same,
        "client": client,
    }


def test_dashboard_shows_cards_tables_and_four_svg_plots(data) -> None:
    response = data["client"].get(reverse("lead:dashboard", kwargs={"slug": "demo"}))
    html = response.content.decode()
    assert response.status_code == 200
    assert html.count("<svg") == 4 and html.count('role="img"') == 4
    assert len(re.findall(r"<rect ", html)) >= 4  # agreement bars at least
    report = agreement_report(project=data["project"])
    value = report["axes"]["overall"]["pairwise_agreement"]["value"]
    assert f"{value:.3f}" in html
    assert (
        'id="axes-table"' in html
        and 'id="annotators-table"' in html
        and 'id="conflict-table"' in html
    )
    assert "Open disagreements" in html and ">2</a>" in html  # split + with-tie
    assert html.count(".csv") >= 6
    assert "<script>window.pwned" not in html


def test_annotator_table_sorts_server_side(data) -> None:
    url = reverse("lead:dashboard", kwargs={"slug": "demo"})

    def order(query: str) -> list[str]:
        html = data["client"].get(url + query).content.decode()
        table = html[html.index('id="annotators-table"') :]
        return re.findall(r'<th scope="row">([^<]+)</th>', table[: table.index("</table>")])

    assert order("") == ["=cmd()", "amy", "zed"]
    assert order("?sort=username&dir=desc") == ["zed", "amy", "=cmd()"]
    assert order("?sort=judgments&dir=desc")[0] in ("amy", "zed", "=cmd()")
    assert order("?sort=over_budget_rate&dir=desc")[0] == "amy"  # the only over-budget judgment
    assert order("?sort=not-a-column") == ["=cmd()", "amy", "zed"]


def test_every_table_downloads_as_csv_with_the_report_numbers(data) -> None:
    report = agreement_report(project=data["project"])
    for table in (
        "axes",
        "annotators",
        "cohen_kappa",
        "length_quintiles",
        "time_quartiles",
        "conflicts",
        "disagreements",
    ):
        response = data["client"].get(reverse("lead:csv", kwargs={"slug": "demo", "table": table}))
        assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
        assert f'filename="demo-{table}.csv"' in response["Content-Disposition"]
        rows = list(csv.DictReader(io.StringIO(response.content.decode())))
        if table == "axes":
            overall = next(r for r in rows if r["axis"] == "overall")
            assert (
                float(overall["pairwise_agreement"])
                == report["axes"]["overall"]["pairwise_agreement"]["value"]
            )
            assert [r["axis"] for r in rows] == ["overall", "helpful", "truthful", "harmless"]
        if table == "annotators":
            # A username that looks like a formula is neutralised for spreadsheets.
            assert sorted(r["username"] for r in rows) == ["'=cmd()", "amy", "zed"]
        if table == "disagreements":
            assert sorted(r["external_id"] for r in rows) == ["split", "with-tie"]
        if table == "time_quartiles":
            assert sum(int(r["n"]) for r in rows if r["axis"] == "overall") == 6


def test_queue_lists_split_comparisons_unresolved_first(data, lee) -> None:
    url = reverse("lead:disagreements", kwargs={"slug": "demo"})
    html = data["client"].get(url).content.decode()
    assert "split" in html and "with-tie" in html and "unanimous" not in html
    comparison_resolve(comparison=data["split"], lead=lee)
    html = data["client"].get(url).content.decode()
    assert html.index("with-tie") < html.index(">split<")
    assert ">split<" not in data["client"].get(url + "?status=open").content.decode()
    assert "with-tie" not in data["client"].get(url + "?status=resolved").content.decode()


def test_detail_shows_every_judgment_side_by_side_and_escapes_model_text(data) -> None:
    url = reverse("lead:disagreement", kwargs={"slug": "demo", "pk": data["split"].pk})
    response = data["client"].get(url)
    assert (
        "script-src 'self'" in response["Content-Security-Policy"]
    )  # a third layer, as on the label screen
    html = response.content.decode()
    assert "<script>window.pwned" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in html  # still readable
    assert "zed" in html and "amy" in html and "A better" in html and "B much better" in html
    assert "A is fine" in html and "unsafe" in html and "over budget" in html
    table = html[html.index('id="judgments-table"') :]
    assert re.search(r"Shown on the left</th><td>A</td><td>B</td>", table)


def test_send_back_and_resolve_with_plain_forms_and_htmx(data, lee) -> None:
    client, split = data["client"], data["split"]
    send_back = reverse("lead:disagreement-send-back", kwargs={"slug": "demo", "pk": split.pk})
    resolve = reverse("lead:disagreement-resolve", kwargs={"slug": "demo", "pk": split.pk})
    response = client.post(resolve)
    assert response.status_code == 302 and response["Location"].endswith(
        f"/disagreements/{split.pk}/"
    )
    split.refresh_from_db()
    assert split.resolved_by == lee and split.resolved_at is not None
    first = split.resolved_at
    client.post(resolve)
    split.refresh_from_db()
    assert split.resolved_at == first  # resolving twice keeps the first
    response = client.post(send_back, {"extra": "2"}, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html and 'id="actions"' in html
    assert "Sent back for 2 more judgments" in html and "Wanted judgments: 4" in html
    split.refresh_from_db()
    assert split.extra_overlap == 2 and split.resolved_at is None  # sending back reopens it
    for bad in ("0", "11", "many"):
        assert client.post(send_back, {"extra": bad}).status_code == 400
    split.refresh_from_db()
    assert split.extra_overlap == 2
    follow = client.post(send_back, {"extra": "1"}, follow=True)
    assert "Sent back for 1 more judgment;" in follow.content.decode()


def test_send_back_makes_the_assignment_service_serve_it_again(data, lee) -> None:
    project, split = data["project"], data["split"]
    newcomer = UserFactory(username="new")
    MembershipFactory(project=project, user=newcomer, role=Membership.Role.ANNOTATOR)
    assert assignment_next(project=project, annotator=newcomer) is None  # everything is full
    comparison_send_back(comparison=split, lead=lee, extra=1)
    assignment = assignment_next(project=project, annotator=newcomer)
    assert assignment is not None and assignment.comparison_id == split.pk


def test_services_enforce_the_lead_role_and_bounds(data, lee) -> None:
    split = data["split"]
    with pytest.raises(PermissionDenied):
        comparison_send_back(comparison=split, lead=data["users"][0])
    with pytest.raises(PermissionDenied):
        comparison_resolve(comparison=split, lead=data["users"][0])
    for extra in (0, 11):
        with pytest.raises(ValidationError):
            comparison_send_back(comparison=split, lead=lee, extra=extra)
    assert Comparison.objects.get(pk=split.pk).extra_overlap == 0
