"""Judgments -> preference records -> files (JSONL, Parquet, HF DatasetDict).

Three layers, each usable alone:

1. `load_comparisons(project)`: the only database access; reads comparisons
   and their *current* judgments (``superseded_at IS NULL``) into plain
   frozen dataclasses.
2. `build_records(...)` and `split_by_prompt(...)`: pure functions, no I/O.
3. `training.export_files.write_export(...)`: writes the files and
   `manifest.json`, returns the sha256 of each file.

Record semantics (also written into every manifest):

- A judgment's *side* on the ``overall`` axis is the sign of its canonical
  ``overall`` value (<0 A, 0 tie, >0 B); on a rubric axis it is
  ``Judgment.axes[axis]`` ('A' | 'tie' | 'B'); a judgment without a value for
  that axis does not count for it.
- Margin (what TRL's RewardTrainer subtracts inside the sigmoid): on
  ``overall`` it is ``|overall| / project.max_strength``, which on the default
  7-point scale gives Llama 2's mapping (much better 1, better 2/3, slightly
  better 1/3, tie 0). On a rubric axis: 1 when decided, 0 for a tie.
- ``majority``: one record per comparison whose winning side has a strict
  majority (> half) of the counted judgments; margin = mean margin of the
  judgments on that side; agreement = their share.
  ``unanimous``: only comparisons where every counted judgment has the same
  side (agreement 1). ``all``: one record per judgment; agreement = the share
  of the comparison's counted judgments on that judgment's side.
- ``ties``: ``drop`` removes tie records (a tied judgment still counts in
  ``n_judgments`` and agreement); ``keep`` writes them with chosen = response
  A, rejected = response B and margin 0 (margin 0 marks a tie).
- ``min_judgments``: comparisons with fewer counted judgments are skipped.
- ``annotators``: the usernames whose judgments support the record.
- ``len_chosen`` / ``len_rejected``: length in characters (Unicode code
  points of the Python string), not tokens.
- Split: by prompt, so no prompt is in both splits; a prompt goes to eval when
  the first 8 bytes of ``sha256(f"{seed}\\n{prompt}")`` read as an integer
  over 2**64 are below ``eval_fraction``. The split of a prompt therefore does
  not change when more data is added later (no leakage between successive
  exports with the same seed); the eval share is approximately, not exactly,
  ``eval_fraction``.
- Chat turns go to ``prompt_messages``, not ``messages``: TRL decides
  whether a row is "conversational" by looking at ONE arbitrary key among
  prompt/chosen/rejected/completion/messages (a set pop, so it varies with
  the hash seed); a list-of-turns ``messages`` column next to string
  ``prompt``/``chosen``/``rejected`` would make that check flip between runs.
  With ``prompt_messages`` every trainer sees the standard (string) format.
- Records are sorted by comparison id, then annotator; nothing time-dependent
  is written, so the same parameters on the same data give identical bytes.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from annotate.models import Project

FORMATS = ("jsonl", "parquet", "hf")
POLICIES = ("majority", "unanimous", "all")
TIES = ("drop", "keep")
SIDES = ("A", "tie", "B")
MANIFEST = "manifest.json"
SCHEMA_VERSION = "pairwise-preferences/1"

COLUMNS: dict[str, str] = {
    "prompt": "the prompt as plain text (chat prompts: the turns rendered as text)",
    "prompt_messages": "chat prompts only: [{role, content}] turns of the prompt; null otherwise",
    "chosen": "the preferred response (response A for a kept tie)",
    "rejected": "the other response",
    "margin": "preference strength in [0, 1]; 0 marks a tie (see margin_mapping)",
    "axis": "'overall' or the rubric axis the record is about",
    "n_judgments": "current judgments on the comparison that count for this axis",
    "agreement": "share of those judgments on the record's side",
    "comparison_id": "database id of the comparison",
    "external_id": "the comparison's id in the imported source",
    "annotators": "usernames whose judgments support the record",
    "model_chosen": "model that wrote `chosen` ('' when unknown)",
    "model_rejected": "model that wrote `rejected` ('' when unknown)",
    "len_chosen": "length of `chosen` in characters",
    "len_rejected": "length of `rejected` in characters",
}


class ExportParamsError(ValueError):
    """Invalid export parameters; `errors` maps a field name to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Vote:
    """One current judgment, reduced to what an export needs."""

    judgment_id: int
    annotator: str
    overall: int
    axes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ComparisonData:
    id: int
    external_id: str
    prompt: str
    messages: list[dict[str, str]] | None
    response_a: str
    response_b: str
    model_a: str
    model_b: str
    votes: tuple[Vote, ...]


@dataclass(frozen=True)
class ExportParams:
    fmt: str = "jsonl"
    axis: str = "overall"
    policy: str = "majority"
    min_judgments: int = 1
    ties: str = "drop"
    exclude_annotators: tuple[str, ...] = ()
    eval_fraction: float = 0.1
    seed: int = 0

    def validate(self, *, axes: Sequence[str]) -> None:
        errors: dict[str, list[str]] = {}
        if self.fmt not in FORMATS:
            errors["fmt"] = [f"must be one of {', '.join(FORMATS)}"]
        if self.axis != "overall" and self.axis not in axes:
            errors["axis"] = [
                f"must be 'overall' or one of the project's axes: {', '.join(axes) or '(none)'}"
            ]
        if self.policy not in POLICIES:
            errors["policy"] = [f"must be one of {', '.join(POLICIES)}"]
        if self.ties not in TIES:
            errors["ties"] = [f"must be one of {', '.join(TIES)}"]
        if (
            isinstance(self.min_judgments, bool)
            or not isinstance(self.min_judgments, int)
            or self.min_judgments < 1
        ):
            errors["min_judgments"] = ["must be an integer >= 1"]
        if (
            not isinstance(self.eval_fraction, int | float)
            or not 0.0 <= float(self.eval_fraction) < 1.0
        ):
            errors["eval_fraction"] = ["must be a number in [0, 1)"]
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            errors["seed"] = ["must be an integer"]
        if errors:
            raise ExportParamsError(errors)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["exclude_annotators"] = sorted(set(self.exclude_annotators))
        data["eval_fraction"] = float(self.eval_fraction)
        return data


# --- 1. database -> plain data ----------------------------------------------


def load_comparisons(project: Project) -> list[ComparisonData]:
    """All comparisons of `project` with their current judgments, by id."""
    from annotate.models import Comparison, Judgment

    votes: dict[int, list[Vote]] = {}
    rows = (
        Judgment.objects.filter(project=project, superseded_at__isnull=True)
        .order_by("comparison_id", "annotator__username", "id")
        .values_list("comparison_id", "id", "annotator__username", "overall", "axes")
    )
    for comparison_id, judgment_id, username, overall, axes in rows.iterator(chunk_size=5000):
        votes.setdefault(comparison_id, []).append(
            Vote(judgment_id=judgment_id, annotator=username, overall=overall, axes=axes or {})
        )
    comparisons = (
        Comparison.objects.filter(project=project)
        .order_by("id")
        .values_list(
            "id",
            "external_id",
            "prompt",
            "prompt_messages",
            "response_a",
            "response_b",
            "model_a",
            "model_b",
        )
    )
    return [
        ComparisonData(
            id=cid,
            external_id=ext,
            prompt=prompt,
            messages=_messages(msgs),
            response_a=a,
            response_b=b,
            model_a=ma,
            model_b=mb,
            votes=tuple(votes.get(cid, ())),
        )
        for cid, ext, prompt, msgs, a, b, ma, mb in comparisons.iterator(chunk_size=2000)
    ]


def _messages(raw: Any) -> list[dict[str, str]] | None:
    """Normalise stored chat turns to exactly {role, content} (a fixed column type)."""
    if not isinstance(raw, list) or not raw:
        return None
    return [
        {"role": str(m.get("role", "")), "content": str(m.get("content", ""))}
        for m in raw
        if isinstance(m, dict)
    ]


# --- 2. pure record building -------------------------------------------------


def vote_side(vote: Vote, *, axis: str, max_strength: int) -> tuple[str, float] | None:
    """(side, margin) of one judgment on `axis`, or None when it has no value there."""
    if axis == "overall":
        side = "A" if vote.overall < 0 else "B" if vote.overall > 0 else "tie"
        return side, min(abs(vote.overall) / max_strength, 1.0)
    value = vote.axes.get(axis)
    if value not in SIDES:
        return None
    return value, 0.0 if value == "tie" else 1.0


def _record(
    c: ComparisonData,
    *,
    side: str,
    margin: float,
    axis: str,
    n: int,
    agreement: float,
    annotators: Iterable[str],
) -> dict[str, Any]:
    a_wins = side != "B"  # a kept tie is written in canonical order, A first
    chosen, rejected = (c.response_a, c.response_b) if a_wins else (c.response_b, c.response_a)
    return {
        "prompt": c.prompt,
        "prompt_messages": c.messages,
        "chosen": chosen,
        "rejected": rejected,
        "margin": margin,
        "axis": axis,
        "n_judgments": n,
        "agreement": agreement,
        "comparison_id": c.id,
        "external_id": c.external_id,
        "annotators": sorted(annotators),
        "model_chosen": c.model_a if a_wins else c.model_b,
        "model_rejected": c.model_b if a_wins else c.model_a,
        "len_chosen": len(chosen),
        "len_rejected": len(rejected),
    }


def build_records(
    comparisons: Iterable[ComparisonData], params: ExportParams, *, max_strength: int
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Preference records (sorted) and a count of why comparisons were skipped."""
    excluded = set(params.exclude_annotators)
    skipped: Counter[str] = Counter()
    records: list[dict[str, Any]] = []
    for c in sorted(comparisons, key=lambda c: c.id):
        labeled = []
        for vote in sorted(c.votes, key=lambda v: (v.annotator, v.judgment_id)):
            if vote.annotator in excluded:
                continue
            sm = vote_side(vote, axis=params.axis, max_strength=max_strength)
            if sm is not None:
                labeled.append((vote, *sm))
        n = len(labeled)
        if n == 0 or n < params.min_judgments:
            skipped["too_few_judgments"] += 1
            continue
        counts = Counter(side for _, side, _ in labeled)
        if params.policy == "all":
            for vote, side, margin in labeled:
                if side == "tie" and params.ties == "drop":
                    skipped["tie_judgment"] += 1
                    continue
                records.append(
                    _record(
                        c,
                        side=side,
                        margin=margin,
                        axis=params.axis,
                        n=n,
                        agreement=counts[side] / n,
                        annotators=[vote.annotator],
                    )
                )
            continue
        side, top = max(counts.items(), key=lambda kv: (kv[1], kv[0] != "tie"))
        if params.policy == "unanimous" and top != n:
            skipped["not_unanimous"] += 1
            continue
        if 2 * top <= n:
            skipped["no_majority"] += 1
            continue
        if side == "tie" and params.ties == "drop":
            skipped["tie"] += 1
            continue
        agreeing = [(v, m) for v, s, m in labeled if s == side]
        margin = sum(m for _, m in agreeing) / len(agreeing)
        records.append(
            _record(
                c,
                side=side,
                margin=margin,
                axis=params.axis,
                n=n,
                agreement=top / n,
                annotators=[v.annotator for v, _ in agreeing],
            )
        )
    return records, skipped


def prompt_in_eval(prompt: str, *, eval_fraction: float, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}\n{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction


def split_by_prompt(
    records: Sequence[dict[str, Any]], *, eval_fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, eval), each keeping the input order; a prompt lands in one split only."""
    train: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    for rec in records:
        (
            held if prompt_in_eval(rec["prompt"], eval_fraction=eval_fraction, seed=seed) else train
        ).append(rec)
    return train, held
