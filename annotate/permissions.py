"""Who may do what, for the REST API and the ML pages.

Roles are per project (`Membership.Role`); `is_staff` users administer
everything. The rules:

- annotator: its own assignments and judgments only;
- lead: its projects' comparisons, judgments and reports; no export, no training;
- ml: its projects' data and reports, imports, exports and training runs;
- staff: everything except labeling (labeling needs the annotator role).

A project the user is not a member of is invisible: 404, never 403, so that
a URL does not reveal whether a project exists. A member without the needed
role gets 403.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404
from rest_framework.authentication import SessionAuthentication, TokenAuthentication

from annotate.models import Membership, Project, User

ANNOTATOR = Membership.Role.ANNOTATOR
LEAD = Membership.Role.LEAD
ML = Membership.Role.ML

# What each capability needs. Staff pass every check but LABEL.
READ_PROJECT = frozenset({ANNOTATOR, LEAD, ML})
READ_DATA = frozenset({LEAD, ML})  # all comparisons, all judgments, reports
IMPORT = frozenset({ML})
EXPORT = frozenset({ML})
TRAIN = frozenset({ML})
LABEL = frozenset({ANNOTATOR})
# Token first: an anonymous API call then gets 401 with `WWW-Authenticate:
# Token` (the session scheme has no challenge, so DRF would answer 403).
API_AUTHENTICATION = [TokenAuthentication, SessionAuthentication]


def roles_of(user: User, project: Project) -> frozenset[str]:
    if not user.is_authenticated:
        return frozenset()
    return frozenset(
        Membership.objects.filter(user=user, project=project).values_list("role", flat=True)
    )


def visible_projects(user: User, roles: Iterable[str] = READ_PROJECT) -> QuerySet[Project]:
    """Projects where `user` holds one of `roles` (all projects for staff)."""
    if not user.is_authenticated:
        return Project.objects.none()
    if user.is_staff:
        return Project.objects.all()
    return Project.objects.filter(
        memberships__user=user, memberships__role__in=list(roles)
    ).distinct()


def can(user: User, project: Project, need: frozenset[str]) -> bool:
    if not user.is_authenticated:
        return False
    if user.is_staff and need != LABEL:
        return True
    return bool(roles_of(user, project) & need)


def project_for(user: User, slug: str, need: frozenset[str] = READ_PROJECT) -> Project:
    """The project `slug` if `user` may use it for `need`.

    404 for non-members, 403 for members whose role does not allow it."""
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        raise Http404("No such project.")
    check_project(user, project, need)
    return project


def check_project(user: User, project: Project, need: frozenset[str]) -> None:
    """404 if `user` is not a member of `project` (staff count as members), 403 if the
    role does not allow `need`."""
    roles = roles_of(user, project)
    if not roles and not user.is_staff:
        raise Http404("No such project.")
    if not can(user, project, need):
        raise PermissionDenied("Your role in this project does not allow this.")


def has_role_anywhere(user: User, need: frozenset[str]) -> bool:
    if not user.is_authenticated:
        return False
    return user.is_staff or Membership.objects.filter(user=user, role__in=list(need)).exists()


def sees_all_judgments(user: User, project: Project) -> bool:
    """Leads, ML staff and staff see every judgment; annotators only their own."""
    return can(user, project, READ_DATA)
