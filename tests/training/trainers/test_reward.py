"""Reward trainer: tokenisation, one forward for both sides, outputs, LoRA, the train command."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from django.core.management import CommandError, call_command
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from training.config import RewardConfig
from training.data import PreferencePair
from training.models import DatasetExport
from training.trainers.reward import PairTemplate, RewardTrainer, encode_pairs, run

from .tiny_reward import save_tiny, synthetic_pairs, tiny_model, tiny_tokenizer

CLS, SEP = 101, 102


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-rm"))


def make_trainer(
    out: Path,
    pairs: list[PreferencePair],
    eval_pairs: list[PreferencePair] | None = None,
    **fields: object,
) -> RewardTrainer:
    tokenizer = tiny_tokenizer()
    config = RewardConfig.from_dict({"lr": 1e-3, "max_length": 64, **fields})
    return RewardTrainer(
        config,
        train_pairs=pairs,
        eval_pairs=eval_pairs or pairs[:4],
        out_dir=out,
        model=tiny_model(tokenizer),
        tokenizer=tokenizer,
    )


def words(n: int, stem: str) -> str:
    return " ".join(f"{stem}{i % 10}" for i in range(n))


def test_bert_pair_template() -> None:
    template = PairTemplate.from_tokenizer(tiny_tokenizer())
    assert (template.prefix, template.middle, template.suffix) == ([CLS], [SEP], [SEP])
    assert (template.prompt_type, template.response_type, template.uses_types) == (0, 1, True)


def test_the_prompt_loses_its_start_first_and_lengths_count_completion_tokens() -> None:
    tok = tiny_tokenizer()
    pair = PreferencePair(
        prompt="alpha " + words(200, "zz") + " omega", chosen="short yes", rejected="no"
    )
    enc = encode_pairs([pair], tok, max_length=32)
    ids = enc.chosen[0].tolist()
    assert len(ids) == 32 and ids[0] == CLS and ids[-1] == SEP
    text = tok.decode(ids)
    assert (
        "omega [SEP] short yes [SEP]" in text
    )  # the end of the prompt and the whole response survive
    assert "alpha" not in text  # the start of the prompt went first
    assert enc.chosen_lens == [len(tok("short yes", add_special_tokens=False)["input_ids"])]
    types = enc.chosen_types[0].tolist()
    assert types == [0] * (len(ids) - 3) + [1] * 3  # response "short yes" (2 tokens) + [SEP]


def test_a_long_response_keeps_at_least_half_of_the_budget() -> None:
    tok = tiny_tokenizer()
    pair = PreferencePair(prompt=words(100, "pp"), chosen=words(100, "cc"), rejected="no")
    enc = encode_pairs([pair], tok, max_length=64)
    ids = enc.chosen[0].tolist()
    budget = 64 - 3
    sep = ids.index(SEP)
    assert len(ids) == 64
    assert (
        len(ids) - sep - 2 == budget // 2
    )  # response tokens: half the budget, the prompt's end the rest
    assert enc.chosen_lens[0] == len(
        tok(words(100, "cc"), add_special_tokens=False)["input_ids"]
    )  # untruncated
    short = enc.rejected[0].tolist()
    assert len(short) == 64 and short[-2] == tok.convert_tokens_to_ids(
        "no"
    )  # a short reply leaves room


def test_chat_template_is_used_when_the_tokenizer_has_one() -> None:
    tok = tiny_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}<{{ m.role }}> {{ m.content }} {% endfor %}"
        "{% if add_generation_prompt %}<assistant> {% endif %}"
    )
    pair = PreferencePair(
        prompt="\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: how are you\n\nAssistant:",
        chosen="fine thanks",
        rejected="go away",
    )
    enc = encode_pairs([pair], tok, max_length=64)
    text = tok.decode(enc.chosen[0])
    assert text.startswith(
        "< user > hi there < assistant > hello < user > how are you < assistant > fine thanks"
    )
    assert CLS not in enc.chosen[0].tolist()  # the template, not the BERT pair format
    assert enc.chosen_lens[0] >= 2


def test_chosen_and_rejected_go_through_one_forward_pass(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, synthetic_pairs(8))
    calls: list[tuple[int, ...]] = []
    trainer.model.register_forward_hook(
        lambda mod, args, kwargs, out: calls.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True,
    )
    batch = trainer.collate([0, 1, 2])
    trainer.compute_loss(batch)
    assert len(calls) == 1 and calls[0][0] == 6
    # Rows 0-2 are the chosen sequences of pairs 0-2, rows 3-5 the rejected ones, right-padded.
    for row, expected in enumerate(
        [trainer.train_data.chosen[i] for i in range(3)]
        + [trainer.train_data.rejected[i] for i in range(3)]
    ):
        n = int(batch["attention_mask"][row].sum())
        assert torch.equal(batch["input_ids"][row, :n], expected)
        assert (batch["input_ids"][row, n:] == 0).all()
    assert "margin" not in batch and batch["token_type_ids"].shape == batch["input_ids"].shape


def test_margins_reach_the_loss_only_when_every_pair_has_one(tmp_path: Path) -> None:
    with_margins = make_trainer(tmp_path / "a", synthetic_pairs(8, margins=True))
    assert with_margins.collate([0, 1])["margin"].shape == (2,)
    assert "margin" not in make_trainer(
        tmp_path / "b", synthetic_pairs(8, margins=True), use_margin=False
    ).collate([0, 1])
    mixed = synthetic_pairs(8, margins=True)[:4] + synthetic_pairs(4)
    assert "margin" not in make_trainer(tmp_path / "c", mixed).collate([0, 1])


def test_a_tiny_model_learns_the_preference(tmp_path: Path) -> None:
    pairs = synthetic_pairs(96, seed=1)
    trainer = make_trainer(tmp_path, pairs[:64], pairs[64:], lr=3e-3, epochs=6, batch_size=8)
    result = trainer.fit()
    assert result.eval_metrics["accuracy"] >= 0.9
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_losses = [m["train/loss"] for m in lines if "train/loss" in m]
    assert len(train_losses) == 48 and sum(train_losses[-8:]) < sum(train_losses[:8]) / 2


def test_run_writes_outputs_that_plain_transformers_loads(tmp_path: Path, tiny_dir: Path) -> None:
    pairs = synthetic_pairs(40, margins=True)
    config = RewardConfig.from_dict(
        {"model": str(tiny_dir), "max_steps": 3, "max_length": 64, "eval_fraction": 0.25}
    )
    result = run(config, train_pairs=pairs, out_dir=tmp_path, data_info={"path": "synthetic"})
    assert result.status == "completed"
    names = {p.name for p in tmp_path.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "run_config.json",
        "metrics.jsonl",
        "eval_report.json",
    } <= names
    run_config = json.loads((tmp_path / "run_config.json").read_text())
    assert (
        run_config["config"] == config.to_dict()
        and run_config["n_train"] + run_config["n_eval"] == 40
    )
    assert RewardConfig.from_dict(run_config["config"]) == config
    report = json.loads((tmp_path / "eval_report.json").read_text())
    for key in (
        "accuracy",
        "acc_chosen_longer",
        "acc_chosen_shorter",
        "length_flip_gap",
        "acc_over_length_heuristic",
        "reward_len_spearman",
        "pair_len_corr",
        "len_r2",
    ):
        assert key in report
    assert (
        sum(v["n"] for v in report["acc_by_margin"].values())
        == report["n_pairs"]
        == run_config["n_eval"]
    )

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path, local_files_only=True)
    assert model.config.num_labels == 1 and model.config.architectures == [
        "BertForSequenceClassification"
    ]
    assert (
        AutoTokenizer.from_pretrained(tmp_path, local_files_only=True).vocab_size
        == tiny_tokenizer().vocab_size
    )


def test_saved_model_scores_match_the_trainer(tmp_path: Path, tiny_dir: Path) -> None:
    pairs = synthetic_pairs(24)
    config = RewardConfig.from_dict(
        {"model": str(tiny_dir), "max_steps": 2, "max_length": 64, "lr": 1e-3}
    )
    trainer = RewardTrainer(config, train_pairs=pairs[:16], eval_pairs=pairs[16:], out_dir=tmp_path)
    trainer.fit()
    trainer.model.eval()
    with torch.no_grad():
        chosen, rejected = trainer.score_pairs(trainer.eval_data)
    reloaded = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, local_files_only=True
    ).eval()
    with torch.no_grad():
        batch = trainer.collate(list(range(len(trainer.eval_data))), trainer.eval_data)
        scores = reloaded(**batch).logits.squeeze(-1)
    torch.testing.assert_close(scores, torch.tensor(chosen + rejected), rtol=1e-5, atol=1e-5)


def test_lora_trains_adapters_and_saves_a_merged_plain_model(
    tmp_path: Path, tiny_dir: Path
) -> None:
    pairs = synthetic_pairs(24)
    config = RewardConfig.from_dict(
        {
            "model": str(tiny_dir),
            "max_steps": 3,
            "max_length": 64,
            "lr": 1e-2,
            "lora_r": 4,
            "lora_alpha": 8,
        }
    )
    trainer = RewardTrainer(config, train_pairs=pairs[:16], eval_pairs=pairs[16:], out_dir=tmp_path)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    frozen_before = {
        n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad
    }
    trainer.fit()
    # fit merged the adapters into the saved model; compare it with the frozen base weights
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path, local_files_only=True)
    state = saved.state_dict()
    assert not any("lora" in k for k in state)
    base_query = next(
        v
        for k, v in frozen_before.items()
        if k.endswith("layer.0.attention.self.query.base_layer.weight")
    )
    base_embeddings = next(
        v for k, v in frozen_before.items() if k.endswith("embeddings.word_embeddings.weight")
    )
    assert not torch.equal(
        state["bert.encoder.layer.0.attention.self.query.weight"], base_query
    )  # merged update
    assert torch.equal(
        state["bert.embeddings.word_embeddings.weight"], base_embeddings
    )  # no LoRA there: unchanged


def test_gradient_checkpointing_gives_the_same_losses(tmp_path: Path) -> None:
    pairs = synthetic_pairs(16)
    results = []
    for flag in (False, True):
        trainer = make_trainer(
            tmp_path / str(flag), pairs, max_steps=2, batch_size=8, gradient_checkpointing=flag
        )
        trainer.fit()
        lines = (tmp_path / str(flag) / "metrics.jsonl").read_text().splitlines()
        results.append([json.loads(x)["train/loss"] for x in lines if "train/loss" in x])
    assert results[0] == pytest.approx(results[1], rel=1e-5)


# --- the train command ----------------------------------------------------------
def _write_jsonl(path: Path, pairs: list[PreferencePair]) -> Path:
    path.write_text(
        "".join(
            json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n"
            for p in pairs
        )
    )
    return path


@pytest.mark.django_db
def test_train_command_reads_an_export_by_id(
    tmp_path: Path, tiny_dir: Path, settings, project
) -> None:
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    folder = settings.ARTIFACTS_ROOT / "exports" / "7"
    folder.mkdir(parents=True)
    pairs = synthetic_pairs(30)
    _write_jsonl(folder / "train.jsonl", pairs[:24])
    _write_jsonl(folder / "eval.jsonl", pairs[24:])
    export = DatasetExport.objects.create(
        project=project, format="jsonl", path="exports/7", n_train=24, n_eval=6
    )
    out = tmp_path / "run"
    stdout = io.StringIO()
    call_command(
        "train",
        "reward",
        "--data",
        f"export:{export.pk}",
        "--out",
        str(out),
        "--model",
        str(tiny_dir),
        "--max-steps",
        "2",
        "--max-length",
        "64",
        "--no-progress",
        stdout=stdout,
    )
    text = stdout.getvalue()
    assert "reward: 24 pairs, 6 held out" in text
    assert (
        "completed: 2/2 steps" in text
        and "eval accuracy" in text
        and "best length-only rule" in text
    )
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["data"]["export_id"] == export.pk and run_config["n_eval"] == 6
    # A bare integer means the same export.
    call_command(
        "train",
        "reward",
        "--data",
        str(export.pk),
        "--out",
        str(tmp_path / "run2"),
        "--model",
        str(tiny_dir),
        "--max-steps",
        "1",
        "--max-length",
        "64",
        "--no-progress",
        stdout=io.StringIO(),
    )
    assert (tmp_path / "run2" / "eval_report.json").exists()


@pytest.mark.django_db
def test_train_command_config_file_flags_override_it(tmp_path: Path, tiny_dir: Path) -> None:
    data = _write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(20))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps({"max_steps": 5, "lr": 1e-4, "max_length": 48, "model": str(tiny_dir)})
    )
    call_command(
        "train",
        "reward",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "o"),
        "--config",
        str(cfg),
        "--max-steps",
        "1",
        "--no-length-bucketing",
        "--no-progress",
        stdout=io.StringIO(),
    )
    config = json.loads((tmp_path / "o" / "run_config.json").read_text())["config"]
    assert (
        config["max_steps"],
        config["lr"],
        config["max_length"],
        config["length_bucketing"],
    ) == (1, 1e-4, 48, False)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "fast"], "lr: expected a number"),
        (["--batch-size", "0"], "batch_size: must be >= 1"),
        (["--schedule", "cyclic"], "schedule: must be one of linear, cosine, constant"),
        (["--model", "/nonexistent/model"], "/nonexistent/model"),
        (["--model", "some-org/not-cached-anywhere"], "never downloaded"),
    ],
)
def test_train_command_rejects_bad_input_naming_it(
    tmp_path: Path, args: list[str], message: str
) -> None:
    data = _write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(10))
    with pytest.raises(CommandError, match=message):
        call_command(
            "train",
            "reward",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "o"),
            *args,
            "--no-progress",
            stdout=io.StringIO(),
        )


@pytest.mark.django_db
def test_train_command_data_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt": "p", "chosen": "a", "rejected": "b"}\n'
        '{"prompt": "p", "chosen": 3, "rejected": "b"}\n'
    )
    with pytest.raises(CommandError, match=r"bad.jsonl, line 2: field 'chosen': expected a string"):
        call_command(
            "train",
            "reward",
            "--data",
            str(bad),
            "--out",
            str(tmp_path / "o"),
            stdout=io.StringIO(),
        )
    with pytest.raises(CommandError, match="no dataset export with id 999"):
        call_command(
            "train",
            "reward",
            "--data",
            "export:999",
            "--out",
            str(tmp_path / "o"),
            stdout=io.StringIO(),
        )


def test_the_new_head_learns_faster_than_the_backbone(tmp_path: Path) -> None:
    trainer = make_trainer(
        tmp_path, synthetic_pairs(8), lr=1e-4, head_lr_mult=10, weight_decay=0.01
    )
    groups = trainer.param_groups()
    head = [g for g in groups if g.get("lr") == pytest.approx(1e-3)]
    assert {id(p) for g in head for p in g["params"]} == {
        id(trainer.model.classifier.weight),
        id(trainer.model.classifier.bias),
    }
    assert all(g["weight_decay"] == 0.0 for g in head)
    body = [g for g in groups if "lr" not in g]
    n_params = sum(1 for p in trainer.model.parameters())
    assert sum(len(g["params"]) for g in body) == n_params - 2
    assert {g["weight_decay"] for g in body} == {0.01, 0.0}  # no decay on biases and norms
