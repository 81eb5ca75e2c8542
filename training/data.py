"""Preference pairs from files: JSONL (optionally gzipped), Parquet, or an export folder.

Accepted records (one JSON object a line, or a Parquet row):

- the export format and TRL's explicit-prompt format:
  ``{"prompt": str, "chosen": str, "rejected": str, "margin"?: number,
  "agreement"?: number, "prompt_messages"?: [{"role", "content"}, ...]}``
  (``messages`` is accepted as a synonym of ``prompt_messages``);
  ``prompt`` may also be a list of messages, and ``chosen``/``rejected`` a
  list holding the assistant message (TRL's conversational format);
- raw Anthropic HH-RLHF lines ``{"chosen": dialogue, "rejected": dialogue}``:
  the prompt is the shared dialogue up to and including the last
  ``"\\n\\nAssistant:"`` of the longest common prefix (in a few real pairs a
  reply itself contains the marker, so "after the last marker" would differ
  between the two dialogues); the responses are what follows.

Errors name the file, the line (or row) and the field. No torch here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ASSISTANT = "\n\nAssistant:"
HUMAN = "\n\nHuman:"
_SPLIT_NAMES = ("train", "eval")
_TURN = re.compile(r"(\n\nHuman:|\n\nAssistant:)")
_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")


class DataError(ValueError):
    """A preference file that cannot be read; the message names file, line and field."""


@dataclass(frozen=True, slots=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    margin: float | None = None  # Llama-2 style margin; None when the data has none
    agreement: float | None = None  # share of annotators who agreed (export column)
    messages: tuple[tuple[str, str], ...] | None = None  # chat prompt as (role, content) turns

    def prompt_key(self) -> str:
        """What "same prompt" means for splits: the text and the chat turns."""
        turns = "" if self.messages is None else json.dumps(self.messages)
        return f"{self.prompt}\x00{turns}"


def split_hh_dialogue(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two HH-RLHF dialogues into (prompt, chosen reply, rejected reply).

    The prompt ends with the last ``"\\n\\nAssistant:"`` inside the longest
    common prefix, so a reply that itself contains the marker stays whole.
    """
    limit = min(len(chosen), len(rejected))
    common = 0
    while common < limit and chosen[common] == rejected[common]:
        common += 1
    cut = chosen.rfind(ASSISTANT, 0, common)
    if cut < 0:
        raise ValueError(f"no shared {ASSISTANT!r} turn: not an HH-RLHF dialogue pair")
    end = cut + len(ASSISTANT)
    return chosen[:end], chosen[end:].strip(), rejected[end:].strip()


def hh_to_messages(prompt: str) -> list[dict[str, str]]:
    """Turn an HH-style prompt into chat messages; a plain prompt becomes one user turn.

    The trailing empty ``"\n\nAssistant:"`` (the slot the response fills) is dropped.
    """
    parts = _TURN.split(prompt)  # [before, marker, text, marker, text, ...]
    if len(parts) == 1:
        return [{"role": "user", "content": prompt.strip()}]
    messages = [{"role": "user", "content": parts[0].strip()}] if parts[0].strip() else []
    for marker, text in zip(parts[1::2], parts[2::2], strict=True):
        role = "user" if marker == HUMAN else "assistant"
        if text.strip():
            messages.append({"role": role, "content": text.strip()})
    return messages


def _messages(value: Any, field: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise DataError(f"field '{field}': expected a non-empty list of messages")
    turns = []
    for i, msg in enumerate(value):
        if (
            not isinstance(msg, dict)
            or not isinstance(msg.get("role"), str)
            or not isinstance(msg.get("content"), str)
        ):
            raise DataError(f"field '{field}': message {i} needs string 'role' and 'content'")
        turns.append((msg["role"], msg["content"]))
    return tuple(turns)


def _response(value: Any, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # TRL conversational: [{"role": "assistant", "content": ...}]
        turns = _messages(value, field)
        return turns[-1][1]
    raise DataError(f"field '{field}': expected a string, got {type(value).__name__}")


def _optional_number(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DataError(f"field '{field}': expected a finite number or null, got {value!r}")
    return float(value)


def pair_from_record(record: Any) -> PreferencePair:
    """Validate one record (see module docstring); raise DataError naming the field."""
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}")
    for name in ("chosen", "rejected"):
        if name not in record:
            raise DataError(f"field '{name}' is missing")
    prompt = record.get("prompt")
    messages = None
    for name in ("prompt_messages", "messages"):  # the export writes prompt_messages
        if record.get(name) is not None:
            messages = _messages(record[name], name)
            break
    if prompt is None and isinstance(record["chosen"], str) and isinstance(record["rejected"], str):
        try:
            prompt, chosen, rejected = split_hh_dialogue(record["chosen"], record["rejected"])
        except ValueError as exc:
            raise DataError(
                f"field 'prompt' is missing and 'chosen'/'rejected' are not HH dialogues: {exc}"
            ) from None
    else:
        if isinstance(prompt, list):
            messages = _messages(prompt, "prompt")
            prompt = (
                "".join(f"\n\n{'Human' if r == 'user' else r.title()}: {c}" for r, c in messages)
                + ASSISTANT
            )
        elif not isinstance(prompt, str):
            raise DataError(
                f"field 'prompt': expected a string or a list of messages, "
                f"got {type(prompt).__name__}"
            )
        chosen = _response(record["chosen"], "chosen")
        rejected = _response(record["rejected"], "rejected")
    return PreferencePair(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        margin=_optional_number(record.get("margin"), "margin"),
        agreement=_optional_number(record.get("agreement"), "agreement"),
        messages=messages,
    )


def _open_text(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8-sig")  # utf-8-sig: tolerate a BOM


def _records(path: Path) -> Iterator[tuple[str, Any]]:
    """(location, record) for each record of a file."""
    name = path.name
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq  # lazy: only parquet users pay for it

        for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield f"row {i}", row
        return
    with _open_text(path) as fh:
        try:
            if name.endswith((".json", ".json.gz")) and fh.read(1) == "[":
                fh.seek(0)
                for i, row in enumerate(json.load(fh), start=1):
                    yield f"item {i}", row
                return
            fh.seek(0)
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield f"line {lineno}", json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}, line {lineno}: invalid JSON ({exc.msg})") from None
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None


def load_pairs(path: str | Path) -> list[PreferencePair]:
    """Read every preference pair of a JSONL / JSONL.gz / JSON / Parquet file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if not path.name.endswith(_SUFFIXES):
        raise DataError(f"{path}: unknown file type (expected one of {', '.join(_SUFFIXES)})")
    pairs = []
    for where, record in _records(path):
        try:
            pairs.append(pair_from_record(record))
        except DataError as exc:
            raise DataError(f"{path}, {where}: {exc}") from None
    if not pairs:
        raise DataError(f"{path}: no preference pairs")
    return pairs


def find_split_file(folder: Path, split: str) -> Path | None:
    """`folder/<split>.<jsonl|jsonl.gz|json|parquet>` if one exists."""
    for suffix in _SUFFIXES:
        candidate = folder / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def load_folder(folder: str | Path) -> tuple[list[PreferencePair], list[PreferencePair] | None]:
    """(train, eval or None) from an export folder: train/eval files or a saved DatasetDict."""
    folder = Path(folder)
    if (folder / "dataset_dict.json").is_file():
        import datasets  # lazy and heavy; only for the `hf` export format

        dd = datasets.load_from_disk(str(folder))
        loaded: dict[str, list[PreferencePair]] = {}
        for split in _SPLIT_NAMES:
            if split in dd:
                try:
                    loaded[split] = [pair_from_record(dict(r)) for r in dd[split]]
                except DataError as exc:
                    raise DataError(f"{folder} [{split}]: {exc}") from None
        if "train" not in loaded:
            raise DataError(f"{folder}: the saved dataset has no 'train' split")
        return loaded["train"], loaded.get("eval")
    train = find_split_file(folder, "train")
    if train is None:
        raise DataError(f"{folder}: no train.jsonl / train.jsonl.gz / train.parquet inside")
    eval_file = find_split_file(folder, "eval")
    return load_pairs(train), (load_pairs(eval_file) if eval_file else None)


def split_by_prompt(
    pairs: Sequence[PreferencePair], *, eval_fraction: float, seed: int = 0
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Hold out about `eval_fraction` of the pairs so that no prompt is in both splits.

    Prompts are ordered by a seeded hash (stable across runs and machines,
    unlike Python's `hash`) and moved to eval until it holds
    round(fraction * N) pairs; both splits keep at least one pair when
    fraction > 0 and there are two prompts or more.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1); got {eval_fraction}")
    groups: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        groups.setdefault(pair.prompt_key(), []).append(i)
    if eval_fraction == 0.0 or len(groups) < 2:
        return list(pairs), []
    order = sorted(groups, key=lambda k: hashlib.sha256(f"{seed}\x00{k}".encode()).hexdigest())
    target = max(1, round(eval_fraction * len(pairs)))
    eval_idx: set[int] = set()
    for key in order[:-1]:  # the last prompt always stays in train
        if len(eval_idx) >= target:
            break
        eval_idx.update(groups[key])
    train = [p for i, p in enumerate(pairs) if i not in eval_idx]
    held = [p for i, p in enumerate(pairs) if i in eval_idx]
    return train, held
