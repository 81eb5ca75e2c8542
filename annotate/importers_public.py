"""Readers of the public preference datasets: Anthropic HH-RLHF and AlpacaEval.

Same contract as `annotate.importers` (which documents both formats and
dispatches to these readers): all records of a file, or an
`ImportValidationError` naming the line or record and the field.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

from annotate.import_records import (
    Ctx,
    Record,
    Verdict,
    comparison_content_hash,
    json_list,
    json_object,
    make_record,
    nonblank_lines,
    text_field,
)

HH_MARKER = "\n\nAssistant:"
HH_ANNOTATOR = "hh-rlhf"
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def split_hh_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """-> (prompt, chosen reply, rejected reply), with prompt + reply == the dialogue.

    The prompt ends at the last ``\\n\\nAssistant:`` *of the longest shared
    prefix*: some replies themselves contain that marker (or ``Human:``), so
    splitting each dialogue at its own last marker would give two prompts.
    """
    shared = os.path.commonprefix([chosen, rejected])
    cut = shared.rfind(HH_MARKER)
    if cut < 0:
        raise ValueError(f"chosen and rejected share no prompt ending in {HH_MARKER!r}")
    cut += len(HH_MARKER)
    return chosen[:cut], chosen[cut:], rejected[cut:]


def hh_messages(prompt: str) -> list[dict[str, str]]:
    """The Human/Assistant turns of an HH-RLHF prompt (the empty last Assistant turn dropped)."""
    parts = _HH_TURN.split(prompt)  # [before, role, text, role, text, ...]
    turns = [{"role": "user", "content": parts[0].strip()}] if parts[0].strip() else []
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        turns.append(
            {"role": "user" if role == "Human" else "assistant", "content": content.strip()}
        )
    if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        turns.pop()
    return turns


def read_hh_rlhf(ctx: Ctx, text: str, with_judgments: bool) -> list[Record]:
    records = []
    for n, raw in nonblank_lines(text):
        obj = json_object(ctx, n, raw)
        chosen = text_field(ctx, n, "chosen", obj.get("chosen"), non_empty=True)
        rejected = text_field(ctx, n, "rejected", obj.get("rejected"), non_empty=True)
        try:
            prompt, good, bad = split_hh_pair(chosen, rejected)
        except ValueError as exc:
            raise ctx.err(n, "chosen", str(exc)) from exc
        digest = comparison_content_hash(prompt, good, bad)
        # Deterministic shuffle from the content: HH always lists the chosen
        # reply first, and a constant A would bias every position statistic.
        chosen_is_a = int(digest[:8], 16) % 2 == 0
        a, b = (good, bad) if chosen_is_a else (bad, good)
        # Byte-identical replies cannot be preferred to each other: a tie.
        side = 0 if good == bad else (-1 if chosen_is_a else 1)
        records.append(
            make_record(
                ctx,
                n,
                prompt=prompt,
                a=a,
                b=b,
                prefix="hh",
                prompt_messages=hh_messages(prompt),
                metadata={"source": "hh-rlhf"},
                verdict=Verdict(HH_ANNOTATOR, side, None) if with_judgments else None,
            )
        )
    return records


def _alpaca_preference(ctx: Ctx, n: int, value: Any) -> tuple[int, int | None]:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or not 1 <= value <= 2
    ):
        raise ctx.err(n, "preference", f"must be a number from 1 to 2 or null, got {value!r}")
    if value == 1.5:
        return 0, None
    if value in (1, 2):
        return (-1 if value == 1 else 1), None
    return (-1 if value < 1.5 else 1), 1  # a soft preference: "slightly better"


def read_alpaca_eval(ctx: Ctx, text: str, with_judgments: bool) -> tuple[list[Record], int]:
    ctx.unit = "record"
    records, ignored = [], 0
    for n, obj in enumerate(json_list(ctx, text), 1):
        if not isinstance(obj, dict):
            raise ctx.err(n, None, f"expected a JSON object, got {type(obj).__name__}")
        verdict, verdict_null = None, False
        if with_judgments:
            if "preference" not in obj:
                raise ctx.err(n, "preference", "missing required field (null means no verdict)")
            verdict_null = obj["preference"] is None
            if not verdict_null:
                side, strength = _alpaca_preference(ctx, n, obj["preference"])
                judge = text_field(
                    ctx, n, "annotator", obj.get("annotator"), non_empty=True, max_length=150
                )
                verdict = Verdict(judge.strip(), side, strength)
        elif obj.get("preference") is not None:
            ignored += 1
        dataset = text_field(ctx, n, "dataset", obj.get("dataset"), required=False)
        records.append(
            make_record(
                ctx,
                n,
                prompt=text_field(ctx, n, "instruction", obj.get("instruction"), non_empty=True),
                a=text_field(ctx, n, "output_1", obj.get("output_1")),
                b=text_field(ctx, n, "output_2", obj.get("output_2")),
                prefix="ae",
                model_a=text_field(
                    ctx, n, "generator_1", obj.get("generator_1"), required=False, max_length=200
                ),
                model_b=text_field(
                    ctx, n, "generator_2", obj.get("generator_2"), required=False, max_length=200
                ),
                metadata={"source": "alpaca-eval", **({"dataset": dataset} if dataset else {})},
                verdict=verdict,
                verdict_null=verdict_null,
            )
        )
    return records, ignored
