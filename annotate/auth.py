"""Authentication backend: AI annotators (imported judges) never log in."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend


class HumanOnlyBackend(ModelBackend):
    def user_can_authenticate(self, user: Any) -> bool:
        # An AI annotator is an account only so its judgments have an author.
        return super().user_can_authenticate(user) and getattr(user, "kind", "human") == "human"
