"""factory_boy factories for the domain models."""
from __future__ import annotations

import hashlib

import factory
from django.utils import timezone

from annotate.models import Assignment, Comparison, Judgment, Membership, Project, User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-for-tests-1")


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"project-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.replace("-", " ").title())


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    role = Membership.Role.ANNOTATOR


class ComparisonFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Comparison

    project = factory.SubFactory(ProjectFactory)
    external_id = factory.Sequence(lambda n: f"c{n}")
    prompt = factory.Sequence(lambda n: f"Question number {n}?")
    response_a = factory.Sequence(lambda n: f"Short answer {n}.")
    response_b = factory.Sequence(lambda n: f"A somewhat longer answer number {n}, with detail.")
    content_hash = factory.LazyAttribute(
        lambda o: hashlib.sha256("\x00".join([o.prompt, *sorted([o.response_a, o.response_b])]).encode()).hexdigest()
    )


class AssignmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Assignment

    comparison = factory.SubFactory(ComparisonFactory)
    project = factory.LazyAttribute(lambda o: o.comparison.project)
    annotator = factory.SubFactory(UserFactory)
    shown_at = factory.LazyFunction(timezone.now)
    status = Assignment.Status.SUBMITTED


class JudgmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Judgment

    assignment = factory.SubFactory(AssignmentFactory)
    comparison = factory.LazyAttribute(lambda o: o.assignment.comparison)
    project = factory.LazyAttribute(lambda o: o.assignment.project)
    annotator = factory.LazyAttribute(lambda o: o.assignment.annotator)
    overall = -2
    submitted_at = factory.LazyFunction(timezone.now)
