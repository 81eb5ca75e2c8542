"""Format readers (pure, no database): real data, traps and bad input."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from annotate.importers import (
    FORMATS,
    HH_MARKER,
    ImportValidationError,
    comparison_content_hash,
    group_records,
    hh_messages,
    parse_file,
    split_hh_pair,
)
from tests.conftest import ALPACA_DIR, HH_RLHF

ROW = {"prompt": "What is 2+2?", "response_a": "4", "response_b": "Four, of course."}


def jsonl(*rows: dict) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode() + b"\n"


def hh_lines() -> list[str]:
    return [line for line in gzip.open(HH_RLHF, "rt", encoding="utf-8").read().split("\n") if line]


def error(
    data: bytes, *, filename: str = "in.jsonl", fmt: str = "auto", **kw
) -> ImportValidationError:
    with pytest.raises(ImportValidationError) as info:
        parse_file(data, filename=filename, fmt=fmt, **kw)
    return info.value


# --- content hash --------------------------------------------------------------------


def test_content_hash_is_the_documented_formula_and_order_independent() -> None:
    expected = hashlib.sha256("\x00".join(["p", "x", "y"]).encode()).hexdigest()
    assert (
        comparison_content_hash("p", "y", "x") == comparison_content_hash("p", "x", "y") == expected
    )
    assert comparison_content_hash("p", "x", "z") != expected


# --- HH-RLHF -------------------------------------------------------------------------------


def test_every_real_hh_pair_splits_into_prompt_plus_reply_including_the_traps() -> None:
    traps = 0
    for line in hh_lines():
        pair = json.loads(line)
        prompt, chosen, rejected = split_hh_pair(pair["chosen"], pair["rejected"])
        assert prompt + chosen == pair["chosen"] and prompt + rejected == pair["rejected"]
        assert prompt.endswith(HH_MARKER) and chosen != rejected
        own_prompts = {d[: d.rfind(HH_MARKER)] for d in (pair["chosen"], pair["rejected"])}
        if len(own_prompts) > 1:
            # A reply itself contains the marker: splitting each dialogue at its
            # own last marker would give two different prompts.
            traps += 1
            assert HH_MARKER in chosen or HH_MARKER in rejected
    assert traps >= 1  # the sample does contain such pairs; they must import too


_turn_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
_reply = st.lists(
    st.sampled_from(["ok", " ", "Human:", HH_MARKER, "\n\nHuman: x", "yes", "no"]), max_size=6
).map("".join)


@given(turns=st.lists(_turn_text, min_size=1, max_size=4), chosen=_reply, rejected=_reply)
def test_hh_split_property(turns: list[str], chosen: str, rejected: str) -> None:
    prompt = (
        "".join(f"\n\nHuman: {t}\n\nAssistant: ok" for t in turns[:-1])
        + f"\n\nHuman: {turns[-1]}{HH_MARKER}"
    )
    got_prompt, got_chosen, got_rejected = split_hh_pair(prompt + chosen, prompt + rejected)
    assert got_prompt + got_chosen == prompt + chosen
    assert got_prompt + got_rejected == prompt + rejected
    assert got_prompt.endswith(HH_MARKER) and got_prompt.startswith(
        prompt[: len(prompt) - len(HH_MARKER)]
    )
    if HH_MARKER not in chosen and HH_MARKER not in rejected:
        assert (got_prompt, got_chosen, got_rejected) == (prompt, chosen, rejected)


def test_hh_split_without_a_shared_assistant_turn_is_an_error_naming_the_line() -> None:
    data = jsonl(
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"}
    )
    err = error(data, fmt="hh-rlhf")
    assert (err.line, err.field) == (1, "chosen") and "in.jsonl, line 1, field 'chosen'" in str(err)


def test_hh_messages_are_the_dialogue_turns() -> None:
    prompt = "\n\nHuman: hi there\n\nAssistant: hello!\n\nHuman: how are you?\n\nAssistant:"
    assert hh_messages(prompt) == [
        {"role": "user", "content": "hi there"},
        {"role": "assistant", "content": "hello!"},
        {"role": "user", "content": "how are you?"},
    ]


def test_hh_file_is_detected_shuffled_deterministically_and_keeps_the_preference() -> None:
    data = HH_RLHF.read_bytes()
    parsed = parse_file(data, filename=HH_RLHF.name, with_judgments=True)
    assert parsed.format == "hh-rlhf" and len(parsed.records) == len(hh_lines())
    assert parse_file(data, filename=HH_RLHF.name, with_judgments=True) == parsed  # deterministic
    chosen_is_a = 0
    for record, line in zip(parsed.records, hh_lines(), strict=True):
        pair = json.loads(line)
        preferred = record.response_a if record.verdict.side < 0 else record.response_b
        assert record.prompt + preferred == pair["chosen"]
        assert record.verdict.annotator == "hh-rlhf" and record.verdict.strength is None
        assert record.prompt_messages and record.prompt_messages[0]["role"] == "user"
        assert record.external_id == f"hh-{record.content_hash[:16]}"
        chosen_is_a += record.verdict.side < 0
    # The chosen reply must not always be A: roughly half each way.
    assert 0.4 < chosen_is_a / len(parsed.records) < 0.6


def test_without_judgments_the_hh_preferences_are_counted_as_ignored() -> None:
    parsed = parse_file(
        jsonl(
            {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"}
        ),
        filename="x.jsonl",
    )
    assert parsed.verdicts_ignored == 1 and parsed.records[0].verdict is None


# --- AlpacaEval -------------------------------------------------------------------------------


def alpaca(preference, **extra) -> bytes:
    record = {
        "instruction": "Say hi",
        "output_1": "hi",
        "generator_1": "m1",
        "output_2": "hello",
        "generator_2": "m2",
        "dataset": "helpful_base",
        "annotator": "judge",
        "preference": preference,
    }
    return json.dumps([record | extra]).encode()


@pytest.mark.parametrize(
    ("preference", "side", "strength"),
    [(1, -1, None), (1.0, -1, None), (2, 1, None), (1.5, 0, None), (1.25, -1, 1), (1.75, 1, 1)],
)
def test_alpaca_preferences_map_to_sides_and_strengths(preference, side, strength) -> None:
    record = parse_file(alpaca(preference), filename="a.json", with_judgments=True).records[0]
    assert (record.verdict.side, record.verdict.strength) == (side, strength)
    assert (record.model_a, record.model_b, record.response_a) == ("m1", "m2", "hi")
    assert record.metadata == {"source": "alpaca-eval", "dataset": "helpful_base"}


def test_alpaca_null_preference_is_no_verdict() -> None:
    record = parse_file(alpaca(None), filename="a.json", with_judgments=True).records[0]
    assert record.verdict is None and record.verdict_null


@pytest.mark.parametrize("bad", [0.5, 3, True, "2", float("nan")])
def test_alpaca_bad_preferences_name_record_and_field(bad) -> None:
    err = error(alpaca(bad), filename="a.json", with_judgments=True)
    assert (err.record, err.field) == (1, "preference") and "record 1" in str(err)


def test_real_alpaca_files_are_detected_and_read() -> None:
    for path in sorted(ALPACA_DIR.glob("*.annotations.json.gz")):
        parsed = parse_file(path.read_bytes(), filename=path.name, with_judgments=True)
        raw = json.loads(gzip.decompress(path.read_bytes()))
        assert (
            parsed.format == "alpaca-eval"
            and parsed.unit == "record"
            and len(parsed.records) == len(raw)
        )
        assert sum(r.verdict is not None for r in parsed.records) == sum(
            r["preference"] is not None for r in raw
        )


# --- jsonl / csv -------------------------------------------------------------------------


def test_generic_jsonl_with_optional_fields() -> None:
    row = ROW | {"id": 7, "model_a": "x", "model_b": "y", "gold": "B", "metadata": {"k": 1}}
    record = parse_file(jsonl(row), filename="in.jsonl").records[0]
    assert (record.external_id, record.explicit_id, record.gold, record.metadata) == (
        "7",
        True,
        1,
        {"k": 1},
    )
    plain = parse_file(jsonl(ROW), filename="in.jsonl").records[0]
    assert plain.external_id == f"sha-{plain.content_hash[:16]}" and not plain.explicit_id


def test_chat_turn_prompts_are_kept_as_messages() -> None:
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    record = parse_file(jsonl(ROW | {"prompt": turns}), filename="in.jsonl").records[0]
    assert record.prompt_messages == turns and "Hi?" in record.prompt


def test_a_json_list_of_generic_records_is_read_with_record_numbers() -> None:
    err = error(json.dumps([ROW, ROW | {"response_b": 5}]).encode(), filename="in.json")
    assert (err.record, err.field) == (2, "response_b")


def test_csv_with_quoted_multiline_cells_metadata_gold_and_judgments() -> None:
    text = (
        "id,prompt,response_a,response_b,gold,metadata,annotator,preference\r\n"
        'r1,"line one\nline two",a,b,tie,"{""k"": [1, 2]}",judge,-3\r\n'
        "r2,p2,a2,b2,,,,\r\n"
    )
    parsed = parse_file(text.encode(), filename="in.csv", with_judgments=True)
    first, second = parsed.records
    assert (
        first.prompt == "line one\nline two" and first.gold == 0 and first.metadata == {"k": [1, 2]}
    )
    assert (first.verdict.side, first.verdict.strength) == (-1, 3) and first.where == 2
    assert (
        second.where == 4
        and second.gold is None
        and second.verdict is None
        and second.metadata == {}
    )


def test_csv_errors_name_the_physical_line_after_a_multiline_cell() -> None:
    text = 'prompt,response_a,response_b,gold\n"a\nb",x,y,A\np,x,y,maybe\n'
    err = error(text.encode(), filename="in.csv")
    assert (err.line, err.field) == (4, "gold")


def test_csv_missing_column_is_named() -> None:
    err = error(b"prompt,response_a\np,a\n", filename="in.csv")
    assert (err.line, err.field) == (1, "response_b")


def test_unescaped_line_separator_inside_a_json_string_is_not_a_line_break() -> None:
    data = ('{"prompt": "a\u2028b", "response_a": "x\u0085", "response_b": "y"}\n').encode()
    assert parse_file(data, filename="in.jsonl").records[0].prompt == "a\u2028b"


# --- bad input -----------------------------------------------------------------------------


def test_truncated_json_names_the_line() -> None:
    data = (
        jsonl(ROW, ROW | {"prompt": "2"}) + json.dumps(ROW | {"prompt": "3"}).encode()[:25] + b"\n"
    )
    err = error(data)
    assert (
        err.line == 3 and "invalid JSON" in err.message and str(err).startswith("in.jsonl, line 3")
    )


def test_missing_field_is_named() -> None:
    err = error(jsonl(ROW, {"prompt": "p", "response_a": "a"}))
    assert (err.line, err.field, err.message) == (2, "response_b", "missing required field")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"prompt": 3}, "prompt"),
        ({"response_a": ["x"]}, "response_a"),
        ({"prompt": "   "}, "prompt"),
        ({"metadata": "k=v"}, "metadata"),
        ({"gold": "maybe"}, "gold"),
        ({"id": True}, "id"),
        ({"model_a": 1.5}, "model_a"),
        ({"respnse_b": "typo"}, "respnse_b"),
        ({"response_b": "nul\x00byte"}, "response_b"),
        ({"response_b": "\ud800"}, "response_b"),
        ({"prompt": [{"role": "robot", "content": "x"}]}, "prompt"),
    ],
)
def test_wrong_types_and_values_are_named(change: dict, field: str) -> None:
    err = error(jsonl(ROW, ROW | {"id": "ok"} | change))
    assert (err.line, err.field) == (2, field)


def test_not_an_object_per_line() -> None:
    assert error(jsonl(ROW) + b'["a list"]\n').line == 2


def test_preference_needs_a_known_value() -> None:
    err = error(jsonl(ROW | {"annotator": "j", "preference": "A-ish"}), with_judgments=True)
    assert err.field == "preference"
    err = error(jsonl(ROW | {"preference": "A"}), with_judgments=True)
    assert err.field == "annotator"


@pytest.mark.parametrize("data", [b"", b"\n \n", codecs.BOM_UTF8, b"[]", gzip.compress(b"")])
def test_empty_files_are_a_clear_error(data: bytes) -> None:
    err = error(data, filename="empty.jsonl")
    assert "empty" in err.message and err.file == "empty.jsonl"


def test_csv_with_only_a_header_has_no_records() -> None:
    assert "no records" in error(b"prompt,response_a,response_b\n", filename="x.csv").message


def test_utf8_bom_is_accepted_in_jsonl_and_csv() -> None:
    assert (
        parse_file(codecs.BOM_UTF8 + jsonl(ROW), filename="in.jsonl").records[0].prompt
        == ROW["prompt"]
    )
    csv_bytes = codecs.BOM_UTF8 + b"prompt,response_a,response_b\np,a,b\n"
    assert parse_file(csv_bytes, filename="in.csv").records[0].prompt == "p"


def test_non_utf8_names_file_and_line() -> None:
    data = jsonl(
        ROW, ROW
    ) + '{"prompt": "caf\u00e9", "response_a": "a", "response_b": "b"}\n'.encode("latin-1")
    err = error(data, filename="latin1.jsonl")
    assert (
        (err.file, err.line) == ("latin1.jsonl", 3)
        and "UTF-8" in err.message
        and "0xe9" in err.message
    )
    assert str(err).startswith("latin1.jsonl, line 3:")
    assert "UTF-16" in error("hi".encode("utf-16"), filename="u16.csv").message


def test_gzip_is_read_transparently_and_a_broken_gzip_is_named() -> None:
    assert len(parse_file(gzip.compress(jsonl(ROW)), filename="in.jsonl.gz").records) == 1
    assert "gzip" in error(gzip.compress(jsonl(ROW))[:30], filename="in.jsonl.gz").message


def test_duplicate_ids_name_both_lines() -> None:
    data = jsonl(ROW | {"id": "x"}, ROW | {"id": "y", "prompt": "other"}, ROW | {"id": "x"})
    with pytest.raises(ImportValidationError) as info:
        group_records(parse_file(data, filename="dup.jsonl"))
    err = info.value
    assert (
        (err.line, err.field) == (3, "id") and "line 1" in err.message and "line 3" in err.message
    )


def test_same_id_with_other_content_is_an_error() -> None:
    data = jsonl(ROW | {"id": "x"}, ROW | {"id": "x", "response_b": "changed"})
    with pytest.raises(ImportValidationError, match="other content at line 1"):
        group_records(parse_file(data, filename="dup.jsonl"))


def test_long_format_judgments_share_one_comparison_and_a_repeat_is_named() -> None:
    rows = [
        ROW | {"id": "x", "annotator": "j1", "preference": "A"},
        {
            **ROW,
            "response_a": ROW["response_b"],
            "response_b": ROW["response_a"],
            "id": "x",
            "annotator": "j2",
            "preference": -1,
        },
    ]
    groups, duplicates = group_records(
        parse_file(jsonl(*rows), filename="in.jsonl", with_judgments=True)
    )
    (group,) = groups
    # j2 saw the pair the other way round: its "A" is the group's B.
    assert [(w, v.annotator, v.side) for w, v in group.verdicts] == [(1, "j1", -1), (2, "j2", 1)]
    assert duplicates == 0
    with pytest.raises(ImportValidationError, match="already judged id 'x' at line 1"):
        group_records(parse_file(jsonl(rows[0], rows[0]), filename="in.jsonl", with_judgments=True))


def test_duplicate_pairs_without_ids_collapse_and_keep_the_first_verdict() -> None:
    pair = {
        "chosen": "\n\nHuman: q\n\nAssistant: good",
        "rejected": "\n\nHuman: q\n\nAssistant: bad",
    }
    groups, duplicates = group_records(
        parse_file(jsonl(pair, pair), filename="h.jsonl", with_judgments=True)
    )
    assert len(groups) == 1 and len(groups[0].verdicts) == 1 and duplicates == 1


def test_a_10_mb_line_is_read() -> None:
    big = "x" * (10 * 1024 * 1024)
    record = parse_file(jsonl(ROW, ROW | {"response_b": big}), filename="big.jsonl").records[1]
    assert len(record.response_b) == len(big)
    csv_bytes = b"prompt,response_a,response_b\np,a," + big.encode() + b"\n"
    assert len(parse_file(csv_bytes, filename="big.csv").records[0].response_b) == len(big)


def test_unknown_format_lists_the_valid_ones() -> None:
    err = error(jsonl(ROW), fmt="xml")
    assert err.field == "format" and all(name in err.message for name in ("auto", *FORMATS))


def test_undetectable_format_says_how_to_choose() -> None:
    err = error(b"just some words\n", filename="notes.txt")
    assert err.field == "format" and "hh-rlhf" in err.message


@pytest.mark.parametrize(
    ("filename", "data", "fmt"),
    [
        ("x.csv", b"prompt,response_a,response_b\np,a,b\n", "csv"),
        ("x.jsonl", jsonl(ROW), "jsonl"),
        ("upload", jsonl(ROW), "jsonl"),
        ("upload", b"prompt,response_a,response_b\np,a,b\n", "csv"),
        (
            "x.jsonl.gz",
            gzip.compress(
                jsonl(
                    {
                        "chosen": "\n\nHuman: q\n\nAssistant: a",
                        "rejected": "\n\nHuman: q\n\nAssistant: b",
                    }
                )
            ),
            "hh-rlhf",
        ),
        ("x.json", alpaca(1), "alpaca-eval"),
    ],
)
def test_auto_detection(filename: str, data: bytes, fmt: str) -> None:
    assert parse_file(data, filename=filename).format == fmt
