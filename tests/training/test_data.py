"""training.data: every accepted format, HH-RLHF splitting, errors naming the place, splits."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import HH_RLHF
from training.data import (
    DataError,
    PreferencePair,
    hh_to_messages,
    load_folder,
    load_pairs,
    split_by_prompt,
    split_hh_dialogue,
)

RECORDS = [
    {"prompt": "Q1", "chosen": "good", "rejected": "bad", "margin": 1.0, "agreement": 0.75},
    {"prompt": "Q2", "chosen": "fine", "rejected": "meh", "margin": None},
]


def test_hh_split_at_the_last_marker_of_the_shared_prefix() -> None:
    prompt = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: tell me a joke\n\nAssistant:"
    assert split_hh_dialogue(prompt + " Why did...", prompt + " No.") == (
        prompt,
        "Why did...",
        "No.",
    )
    # The trap: a reply that itself contains the marker. "After the last marker" would cut the
    # chosen reply in two; the longest shared prefix keeps it whole.
    trap = prompt + " Sure.\n\nAssistant: (continues)"
    assert split_hh_dialogue(trap, prompt + " No.") == (
        prompt,
        "Sure.\n\nAssistant: (continues)",
        "No.",
    )
    with pytest.raises(ValueError, match="not an HH-RLHF dialogue"):
        split_hh_dialogue("just text", "other text")


def test_hh_to_messages() -> None:
    prompt = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and now?\n\nAssistant:"
    assert hh_to_messages(prompt) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and now?"},
    ]
    assert hh_to_messages("Write a poem.") == [{"role": "user", "content": "Write a poem."}]


def test_the_real_hh_sample_loads_every_pair() -> None:
    pairs = load_pairs(HH_RLHF)
    assert len(pairs) == 1800
    assert all(
        p.prompt.endswith("\n\nAssistant:") and p.prompt.startswith("\n\nHuman:") for p in pairs
    )
    assert all(p.chosen != p.rejected for p in pairs)
    assert all(p.margin is None for p in pairs)


def test_jsonl_gz_json_and_parquet_give_the_same_pairs(tmp_path: Path) -> None:
    lines = "".join(json.dumps(r) + "\n" for r in RECORDS)
    (tmp_path / "a.jsonl").write_text(
        "\ufeff" + lines + "\n"
    )  # a BOM and a blank line are tolerated
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as fh:
        fh.write(lines)
    (tmp_path / "a.json").write_text(json.dumps(RECORDS))
    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "a.parquet")
    expected = [
        PreferencePair("Q1", "good", "bad", 1.0, 0.75),
        PreferencePair("Q2", "fine", "meh", None),
    ]
    for name in ("a.jsonl", "a.jsonl.gz", "a.json", "a.parquet"):
        assert load_pairs(tmp_path / name) == expected, name


def test_chat_and_trl_conversational_records(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    rows = [
        {
            "prompt": "Hi",
            "prompt_messages": [{"role": "user", "content": "Hi"}],
            "chosen": "Hello",
            "rejected": "Go",
        },
        {
            "prompt": [{"role": "user", "content": "Hey"}],
            "chosen": [{"role": "assistant", "content": "Yo"}],
            "rejected": [{"role": "assistant", "content": "No"}],
        },
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second = load_pairs(path)
    assert first.messages == (("user", "Hi"),) and first.prompt == "Hi"
    assert second.messages == (("user", "Hey"),) and (second.chosen, second.rejected) == (
        "Yo",
        "No",
    )
    assert second.prompt.endswith("\n\nAssistant:")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"\n',
            "line 2: invalid JSON",
        ),
        ('{"prompt": "p", "chosen": "a"}\n', "line 1: field 'rejected' is missing"),
        (
            '{"prompt": 5, "chosen": "a", "rejected": "b"}\n',
            "line 1: field 'prompt': expected a string",
        ),
        (
            '{"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"}\n',
            "line 1: field 'margin': expected a finite",
        ),
        ('{"prompt": "p", "chosen": "a", "rejected": "b", "margin": true}\n', "field 'margin'"),
        (
            '{"chosen": "a", "rejected": "b"}\n',
            "line 1: field 'prompt' is missing and 'chosen'/'rejected' are not HH",
        ),
        ("[1, 2]\n", "line 1: expected a JSON object"),
        ("", "no preference pairs"),
    ],
)
def test_errors_name_the_file_line_and_field(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_pairs(path)
    assert str(path) in str(info.value)


def test_unreadable_files(tmp_path: Path) -> None:
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_pairs(latin)
    with pytest.raises(DataError, match="no such file"):
        load_pairs(tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unknown file type"):
        load_pairs(tmp_path / "x.csv")


def test_export_folders(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(json.dumps(RECORDS[0]) + "\n")
    train, held = load_folder(tmp_path)
    assert len(train) == 1 and held is None
    pq.write_table(pa.Table.from_pylist(RECORDS[1:]), tmp_path / "eval.parquet")
    train, held = load_folder(tmp_path)
    assert held == [PreferencePair("Q2", "fine", "meh")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no train.jsonl"):
        load_folder(tmp_path / "empty")
    import datasets

    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(RECORDS[:1]),
            "eval": datasets.Dataset.from_list(RECORDS[:1]),
        }
    )
    dd.save_to_disk(str(tmp_path / "hf"))
    train, held = load_folder(tmp_path / "hf")
    assert train == held == [PreferencePair("Q1", "good", "bad", 1.0, 0.75)]


def test_split_by_prompt_is_disjoint_sized_and_deterministic() -> None:
    pairs = [
        PreferencePair(f"prompt {i % 300}", f"c{i}", f"r{i}") for i in range(1000)
    ]  # repeated prompts
    train, held = split_by_prompt(pairs, eval_fraction=0.1, seed=0)
    assert len(train) + len(held) == 1000
    assert 95 <= len(held) <= 110
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    assert split_by_prompt(pairs, eval_fraction=0.1, seed=0) == (train, held)
    assert split_by_prompt(pairs, eval_fraction=0.1, seed=1)[1] != held
    assert split_by_prompt(pairs, eval_fraction=0.0) == (pairs, [])
    one_prompt = [PreferencePair("same", "a", "b")] * 5
    assert split_by_prompt(one_prompt, eval_fraction=0.5) == (
        one_prompt,
        [],
    )  # cannot split: all train
