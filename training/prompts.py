"""Prompts for on-policy trainers (PPO): read from a prompt file or taken from preference data.

Accepted inputs (one JSON object a line, gzipped or not, or JSON / Parquet):

- a prompt file: ``{"prompt": str | [{"role", "content"}, ...]}`` per record
  (other fields are ignored);
- any preference file ``training.data`` reads (an export's ``train.jsonl``,
  TRL's format, raw HH-RLHF dialogues): only the prompts are used;
- an export folder: the prompts of its train split, and of its eval split as
  held-out prompts.

Prompts are deduplicated in file order (a preference file repeats a prompt
once per pair). Errors name the file, the line and the field. No torch here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from training import data as data_io


def _prompt_of(record: Any) -> str:
    """The prompt text of one record; chat messages are rendered like `training.data` renders them."""
    if not isinstance(record, dict):
        raise data_io.DataError(f"expected a JSON object, got {type(record).__name__}")
    if "chosen" in record or "rejected" in record:  # a preference record: its prompt
        return data_io.pair_from_record(record).prompt
    if "prompt" not in record:
        raise data_io.DataError("field 'prompt' is missing")
    prompt = record["prompt"]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return data_io.pair_from_record({"prompt": prompt, "chosen": "", "rejected": ""}).prompt
    raise data_io.DataError(f"field 'prompt': expected a string or a list of messages, got {type(prompt).__name__}")


def unique_prompts(prompts: list[str]) -> list[str]:
    """Non-blank prompts, first occurrence kept, in order."""
    return list(dict.fromkeys(p for p in prompts if p.strip()))


def load_prompts(path: str | Path) -> list[str]:
    """Distinct prompts of a prompt file or a preference file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise data_io.DataError(f"{path}: no such file")
    prompts = []
    for where, record in data_io._records(path):  # the shared reader: gzip, BOM, JSON errors with lines
        try:
            prompts.append(_prompt_of(record))
        except data_io.DataError as exc:
            raise data_io.DataError(f"{path}, {where}: {exc}") from None
    unique = unique_prompts(prompts)
    if not unique:
        raise data_io.DataError(f"{path}: no prompts")
    return unique
