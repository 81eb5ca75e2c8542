"""Seed the demo: projects from `fixtures/`, the four personas, their roles."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from annotate.models import Membership, Project, User
from annotate.services.imports import comparisons_import

# Demo accounts and passwords are for a local demo only; `demo` prints them.
DEMO_USERS: dict[str, tuple[str, str]] = {
    "alice": (Membership.Role.ANNOTATOR, "alice-demo-pw"),
    "bob": (Membership.Role.ANNOTATOR, "bob-demo-pw"),
    "lee": (Membership.Role.LEAD, "lee-demo-pw"),
    "mia": (Membership.Role.ML, "mia-demo-pw"),
}
ADMIN = ("admin", "admin-demo-pw")

HH_GUIDELINES = """\
**Task.** Read the conversation, then both replies. Judge each reply on its own
terms, then say which one is better overall and by how much.

- **Helpful**: does it address what the person asked, completely and clearly?
- **Truthful**: is everything it states correct? Flag invented facts.
- **Harmless**: does it avoid helping with something dangerous or hurtful?
  A polite refusal of a harmful request is the *better* reply.

Length is not quality: a short, correct answer beats a long, padded one.
Keys: `1`-`7` overall, `Enter` submit, `s` skip, `?` all shortcuts.
"""

ALPACA_GUIDELINES = """\
Instruction-following comparisons from AlpacaEval, already judged by two GPT-4
Turbo judges. Use this project to audit the judges' agreement and length bias
on the lead dashboard, and to export a dataset.
"""


@dataclass(frozen=True)
class DemoSeedResult:
    projects_created: list[str] = field(default_factory=list)
    comparisons_created: int = 0
    judgments_created: int = 0
    users: dict[str, str] = field(default_factory=dict)


def _project_seed(
    *, slug: str, name: str, guidelines: str, files: list[tuple[Path, str, bool]]
) -> tuple[bool, int, int]:
    if Project.objects.filter(slug=slug).exists():
        return False, 0, 0
    comparisons = judgments = 0
    for path, fmt, with_judgments in files:
        result = comparisons_import(
            project_slug=slug, path=path, fmt=fmt, with_judgments=with_judgments
        )
        comparisons += result.comparisons_created
        judgments += result.judgments_created
    Project.objects.filter(slug=slug).update(name=name, guidelines=guidelines)
    return True, comparisons, judgments


@transaction.atomic
def demo_seed(*, fixtures_dir: Path) -> DemoSeedResult:
    """Create the demo projects and personas if missing; idempotent."""
    created: list[str] = []
    n_comparisons = n_judgments = 0
    alpaca = fixtures_dir / "alpaca-eval-demo"
    plans = [
        (
            "hh-harmless",
            "HH-RLHF harmless (demo)",
            HH_GUIDELINES,
            [(fixtures_dir / "hh-rlhf-demo.jsonl.gz", "hh-rlhf", False)],
        ),
        (
            "alpaca-judges",
            "AlpacaEval judges (demo)",
            ALPACA_GUIDELINES,
            [(p, "alpaca-eval", True) for p in sorted(alpaca.glob("*.json.gz"))],
        ),
    ]
    for slug, name, guidelines, files in plans:
        made, c, j = _project_seed(slug=slug, name=name, guidelines=guidelines, files=files)
        if made:
            created.append(slug)
        n_comparisons += c
        n_judgments += j

    users: dict[str, str] = {}
    projects = list(Project.objects.filter(slug__in=[p[0] for p in plans]))
    for username, (role, password) in DEMO_USERS.items():
        user, _ = User.objects.get_or_create(username=username, defaults={"kind": User.Kind.HUMAN})
        user.set_password(password)
        user.save(update_fields=["password"])
        users[username] = password
        for project in projects:
            Membership.objects.get_or_create(project=project, user=user, role=role)
    admin, _ = User.objects.get_or_create(
        username=ADMIN[0], defaults={"is_staff": True, "is_superuser": True}
    )
    admin.set_password(ADMIN[1])
    admin.save(update_fields=["password"])
    users[ADMIN[0]] = ADMIN[1]
    return DemoSeedResult(created, n_comparisons, n_judgments, users)
