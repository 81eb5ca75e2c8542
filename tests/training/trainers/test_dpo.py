"""DPO trainer on tiny random Llama models (built from a config) and an in-memory chat tokenizer."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from django.core.management import call_command
from torch.optim.optimizer import register_optimizer_step_pre_hook

from training.callbacks import RunHooks, read_metrics
from training.config import DPOConfig
from training.data import PreferencePair
from training.generation import GenerationProbe, score
from training.packing import (
    PACKED_ATTENTION,
    enable_packed_attention,
    pack,
    packing_supported,
    pad,
    sequence_logps,
    token_logps,
)
from training.policy import PairEncoder
from training.trainers.dpo import DPOTrainer, run

WORDS = [
    "yes",
    "no",
    "cat",
    "dog",
    "sun",
    "sea",
    "red",
    "blue",
    "one",
    "two",
    "up",
    "down",
    "hot",
    "cold",
    "user",
    "assistant",
    "system",
]
SPECIAL = ["<pad>", "<|im_end|>", "<unk>", "<|im_start|>"]
CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)
BASE = {
    "lr": 5e-3,
    "warmup_ratio": 0.0,
    "max_length": 48,
    "batch_size": 4,
    "probe_prompts": 3,
    "probe_max_new_tokens": 6,
    "eval_batch_size": 4,
    "max_grad_norm": 0.0,
}


def chat_tokenizer() -> Any:
    """Word-level tokenizer with a ChatML-like template; nothing downloaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(
        models.WordLevel(vocab={w: i for i, w in enumerate(SPECIAL + WORDS)}, unk_token="<unk>")
    )
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>"],
    )
    tok.chat_template = CHAT
    return tok


def tiny_llama(
    vocab_size: int, *, seed: int = 0, attn: str = "sdpa", init_range: float = 0.02
) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
        tie_word_embeddings=False,
        initializer_range=init_range,
        attn_implementation=attn,
    )
    return LlamaForCausalLM(config)


def pairs(n: int, *, seed: int = 0) -> list[PreferencePair]:
    """Chosen answers say 'yes', rejected say 'no'; lengths vary so both length groups exist."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS[2:14]) for _ in range(rng.randint(2, 8)))
        chosen = " ".join(["yes"] * rng.randint(1, 4))
        rejected = " ".join(["no"] * rng.randint(1, 4))
        out.append(
            PreferencePair(
                prompt=f"\n\nHuman: {words} {WORDS[2 + i % 12]}\n\nAssistant:",
                chosen=chosen,
                rejected=rejected,
            )
        )
    return out


def make_trainer(
    out: Path, n: int = 8, *, model: Any = None, hooks: RunHooks | None = None, **fields: object
) -> DPOTrainer:
    tok = chat_tokenizer()
    data = pairs(n + 4)
    config = DPOConfig.from_dict({**BASE, **fields})
    return DPOTrainer(
        config,
        train_pairs=data[:n],
        eval_pairs=data[n:],
        out_dir=out,
        hooks=hooks,
        model=model if model is not None else tiny_llama(len(tok)),
        tokenizer=tok,
    )


def random_sequences(seed: int, vocab: int = 21) -> tuple[list[list[int]], list[list[int]]]:
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (5, 11, 3, 8, 1, 6)]
    comps = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (7, 2, 12, 4, 9, 1)]
    return prompts, comps


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    """Tiny models gain nothing from threads, and on a busy shared CPU thread hand-offs dominate."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- packing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn", ["sdpa", "eager", PACKED_ATTENTION])
def test_packed_and_padded_log_probs_agree_in_fp32(attn: str) -> None:
    """sdpa/eager: transformers' block-diagonal mask from position ids; ours: sdpa per sequence."""
    model = tiny_llama(21, attn="sdpa" if attn == PACKED_ATTENTION else attn, init_range=0.2).eval()
    if attn == PACKED_ATTENTION:
        enable_packed_attention(model)
        assert model.config._attn_implementation == PACKED_ATTENTION
    prompts, comps = random_sequences(1)
    packed = sequence_logps(model, pack(prompts, comps))
    padded = sequence_logps(model, pad(prompts, comps, pad_id=0))
    assert packed.dtype == torch.float32
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=0)
    # Naive reference: each sequence alone, full log_softmax, completion positions only.
    for s, (p, c) in enumerate(zip(prompts, comps, strict=True)):
        logits = model(torch.tensor([p + c])).logits[0]
        logp = torch.log_softmax(logits.float(), -1)
        naive = sum(logp[len(p) - 1 + i, tok] for i, tok in enumerate(c))
        assert packed[s].item() == pytest.approx(naive.item(), abs=1e-5)


def test_packed_gradients_equal_padded_gradients() -> None:
    prompts, comps = random_sequences(2)
    grads = []
    for batch in (pack(prompts, comps), pad(prompts, comps, pad_id=0)):
        model = tiny_llama(21, init_range=0.2)
        enable_packed_attention(model)  # the padded batch goes through plain sdpa with its mask
        sequence_logps(model, batch).sum().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4)


def test_packing_really_separates_sequences() -> None:
    """Negative control: positions that do not restart make one long sequence: results change."""
    model = tiny_llama(21, init_range=0.2).eval()
    prompts, comps = random_sequences(3)
    batch = pack(prompts, comps)
    leaky = pack(prompts, comps)
    leaky.position_ids = torch.arange(batch.num_tokens).unsqueeze(
        0
    )  # no restart: one long sequence
    assert not torch.allclose(sequence_logps(model, batch), sequence_logps(model, leaky), atol=1e-3)
    assert packing_supported(model, vocab_size=21)
    # The same control for our per-sequence attention: boundaries that say "one sequence" leak.
    enable_packed_attention(model)
    one = pack(prompts, comps)
    one.seq_lens = torch.tensor(
        [batch.num_tokens]
    )  # token_logps reads the boundaries from seq_lens
    assert not torch.allclose(token_logps(model, batch), token_logps(model, one), atol=1e-3)
    assert packing_supported(model, vocab_size=21)


def test_only_completion_tokens_are_scored() -> None:
    prompts, comps = random_sequences(4)
    batch = pack(prompts, comps)
    assert batch.target_pos.numel() == sum(len(c) for c in comps) == batch.completion_lens.sum()
    assert batch.input_ids.shape == (
        1,
        sum(len(p) + len(c) for p, c in zip(prompts, comps, strict=True)),
    )
    # Each target is the token right after its logit position, inside its own sequence.
    flat = batch.input_ids.view(-1)
    assert torch.equal(flat[batch.target_pos + 1], batch.target_ids)
    model = tiny_llama(21).eval()
    assert token_logps(model, batch).shape == (batch.target_pos.numel(),)


# --- text -> ids ----------------------------------------------------------------------------------


def test_chat_template_is_applied_and_completion_ends_with_end_of_turn() -> None:
    tok = chat_tokenizer()
    enc = PairEncoder(tok, max_length=64)
    pair = enc.encode(
        "\n\nHuman: cat dog\n\nAssistant: sun\n\nHuman: red\n\nAssistant:", "yes yes", "no"
    )
    text = tok.convert_ids_to_tokens(pair.prompt)
    assert text == [
        "<|im_start|>",
        "user",
        "cat",
        "dog",
        "<|im_end|>",
        "<|im_start|>",
        "assistant",
        "sun",
        "<|im_end|>",
        "<|im_start|>",
        "user",
        "red",
        "<|im_end|>",
        "<|im_start|>",
        "assistant",
    ]
    assert tok.convert_ids_to_tokens(pair.chosen) == ["yes", "yes", "<|im_end|>"]
    assert tok.convert_ids_to_tokens(pair.rejected) == ["no", "<|im_end|>"]


def test_truncation_keeps_the_end_of_the_prompt() -> None:
    tok = chat_tokenizer()
    enc = PairEncoder(tok, max_length=12)
    long_prompt = "\n\nHuman: " + " ".join(["cat"] * 30) + " dog\n\nAssistant:"
    pair = enc.encode(long_prompt, "yes " * 10, "no")
    assert len(pair.prompt) + max(len(pair.chosen), len(pair.rejected)) <= 12
    assert tok.convert_ids_to_tokens(pair.prompt)[-2:] == ["<|im_start|>", "assistant"]
    assert len(pair.prompt) >= 6  # at least half the budget stays with the prompt


# --- the trainer ----------------------------------------------------------------------------------


def test_first_step_loss_is_log_two_when_policy_equals_reference(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_steps=1, lr=1e-9)
    trainer.fit()
    first = read_metrics(tmp_path / "metrics.jsonl")[0]
    assert first["train/loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["train/rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    for name in (
        "logps/chosen",
        "logps/rejected",
        "logps_per_token/chosen",
        "logps_per_token/rejected",
    ):
        assert first[f"train/{name}"] < 0


def _first_step_grads(out: Path, **fields: object) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}
    trainer = make_trainer(out, n=8, max_steps=1, model=tiny_llama(21, init_range=0.2), **fields)
    names = {id(p): k for k, p in trainer.model.named_parameters()}

    def capture(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        seen.update(
            (names[id(p)], p.grad.detach().clone())
            for g in optimizer.param_groups
            for p in g["params"]
        )

    handle = register_optimizer_step_pre_hook(capture)
    try:
        trainer.fit()
    finally:
        handle.remove()
    return seen


def test_gradient_accumulation_equals_one_full_batch(tmp_path: Path) -> None:
    full = _first_step_grads(tmp_path / "full", batch_size=4, grad_accum=1)
    accum = _first_step_grads(tmp_path / "accum", batch_size=2, grad_accum=2)
    ones = _first_step_grads(tmp_path / "ones", batch_size=1, grad_accum=4)
    assert full and set(full) == set(accum)
    assert any(g.abs().sum() > 0 for g in full.values())
    for name in full:
        torch.testing.assert_close(accum[name], full[name], atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(ones[name], full[name], atol=1e-6, rtol=1e-4)


def test_precomputed_and_live_reference_give_the_same_run(tmp_path: Path) -> None:
    losses = {}
    for ref in ("precomputed", "live"):
        make_trainer(tmp_path / ref, max_steps=3, reference=ref, probe_prompts=0).fit()
        losses[ref] = [
            r["train/loss"]
            for r in read_metrics(tmp_path / ref / "metrics.jsonl")
            if "train/loss" in r
        ]
    assert len(losses["live"]) == 3
    assert losses["live"] == pytest.approx(losses["precomputed"], abs=1e-5)


def test_precomputed_reference_holds_no_second_model(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_steps=1)
    assert trainer.live_ref is None and trainer.ref_logps["train"].shape == (8, 2)
    assert not any(isinstance(v, torch.nn.Module) for k, v in vars(trainer).items() if k != "model")


@pytest.mark.parametrize("variant", ["sigmoid", "ipo", "hinge", "rdpo", "simpo"])
def test_tiny_model_overfits_a_handful_of_pairs(tmp_path: Path, variant: str) -> None:
    extra = (
        {"alpha": 0.01}
        if variant == "rdpo"
        else {"beta": 1.0, "gamma": 0.2}
        if variant == "simpo"
        else {}
    )
    tok = chat_tokenizer()
    data = pairs(6, seed=3)
    config = DPOConfig.from_dict(
        {
            **BASE,
            "max_steps": 30,
            "batch_size": 6,
            "lr": 1e-2,
            "probe_prompts": 0,
            "variant": variant,
            **extra,
        }
    )
    result = run(
        config,
        train_pairs=data,
        eval_pairs=data,
        out_dir=tmp_path,
        model=tiny_llama(len(tok)),
        tokenizer=tok,
    )
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "train/loss" in r]
    margins = [r["train/rewards/margins"] for r in rows]
    assert rows[0]["train/rewards/accuracies"] == 0.0  # step 0: policy == reference, no margin yet
    if (
        variant == "ipo"
    ):  # IPO regresses the log-ratio gap onto 1/(2 beta): the reward margin settles at 1/2
        assert margins[0] == 0.0 and margins[-1] == pytest.approx(0.5, abs=0.05)
    elif (
        variant == "hinge"
    ):  # SLiC stops pushing a pair once beta * h >= 1: every pair gets past the hinge
        assert rows[-1]["train/loss"] == 0.0 and margins[-1] >= 1.0
    else:  # the logistic losses keep pushing the margin up
        assert margins[-1] > margins[0] + 0.5
        assert sum(margins[-5:]) > sum(margins[5:10]) > sum(margins[:5])
    assert rows[-1]["train/rewards/accuracies"] == 1.0
    assert result.eval_metrics["accuracy"] == 1.0
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]


def test_run_writes_a_causal_lm_and_every_diagnostic(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    tok = chat_tokenizer()
    data = pairs(14)
    config = DPOConfig.from_dict({**BASE, "max_steps": 4, "eval_every": 2, "eval_fraction": 0.3})
    result = run(
        config, train_pairs=data, out_dir=tmp_path, model=tiny_llama(len(tok)), tokenizer=tok
    )
    assert result.status == "completed"
    names = set().union(*(r.keys() for r in read_metrics(tmp_path / "metrics.jsonl")))
    for name in (
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "logps_per_token/chosen",
        "logps_per_token/rejected",
    ):
        assert f"train/{name}" in names and f"eval/{name}" in names
    for name in (
        "margin_len_corr",
        "acc_chosen_longer",
        "acc_chosen_shorter",
        "gen/len_mean",
        "gen/len_p90",
        "gen/len_ratio_vs_ref",
        "gen/truncated_rate",
        "gen/kl_seq",
    ):
        assert f"eval/{name}" in names, name
    probes = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "eval/gen/len_mean" in r]
    assert [r["step"] for r in probes] == [2, 4]  # every eval_every steps and at the end
    report = json.loads((tmp_path / "eval_report.json").read_text())
    assert report["probe"]["before"]["len_mean"] > 0 and "gen/len_mean" in report["probe"]["after"]
    assert json.loads((tmp_path / "run_config.json").read_text())["packed"] is True
    assert not (tmp_path / ".reference").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert reloaded.config._attn_implementation == "sdpa"  # the packed attention is not saved
    state = result.out_dir
    assert reloaded.config.vocab_size == len(tok) and state == tmp_path


def test_probe_before_training_has_zero_kl_and_ratio_one() -> None:
    model = tiny_llama(21, init_range=0.2).eval()
    prompts, _ = random_sequences(5)
    probe = GenerationProbe(
        prompts, stop_ids=[1], pad_id=0, max_new_tokens=5, temperature=1.0, seed=7
    )
    rng = torch.get_rng_state()
    probe.cache_reference(model)
    metrics = probe.run(model, lambda p, c: score(model, p, c))
    assert torch.equal(torch.get_rng_state(), rng)  # the probe never moves the loop's random stream
    assert metrics["gen/kl_seq"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["gen/len_ratio_vs_ref"] == pytest.approx(1.0)
    assert 1 <= metrics["gen/len_mean"] <= 5 and 0.0 <= metrics["gen/truncated_rate"] <= 1.0
    assert probe.reference is not None and all(len(c) <= 5 for c in probe.reference.completions)


def test_lora_run_saves_a_plain_causal_lm(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    trainer = make_trainer(tmp_path, max_steps=2, lora_r=4, lr=1e-2, reference="live")
    assert (
        trainer.live_ref is None
    )  # with LoRA the reference is the base with adapters off: no copy
    trainable = [k for k, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in k for k in trainable)
    initial = {
        k: v.clone()
        for k, v in trainer.model.get_base_model().state_dict().items()
        if "lora_" not in k
    }
    result = trainer.fit()
    last = read_metrics(tmp_path / "metrics.jsonl")[-1]
    assert result.status == "completed" and last["eval/gen/kl_seq"] is not None
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    weights = reloaded.state_dict()
    assert not any("lora" in k for k in weights)
    name = "model.layers.0.self_attn.q_proj.weight"  # the adapter's update is merged into it
    base_name = "model.layers.0.self_attn.q_proj.base_layer.weight"
    assert not torch.equal(weights[name], initial[base_name])


def test_cancel_then_resume_reproduces_the_run(tmp_path: Path) -> None:
    full = make_trainer(tmp_path / "full", max_steps=4, probe_prompts=0)
    full.fit()
    reference = [
        r["train/loss"]
        for r in read_metrics(tmp_path / "full" / "metrics.jsonl")
        if "train/loss" in r
    ]
    calls = {"n": 0}

    def stop_after_two() -> bool:
        calls["n"] += 1
        return calls["n"] == 2

    part = make_trainer(
        tmp_path / "part", max_steps=4, probe_prompts=0, hooks=RunHooks(should_stop=stop_after_two)
    )
    assert part.fit().status == "cancelled"
    resumed = make_trainer(tmp_path / "part", max_steps=4, probe_prompts=0)
    assert resumed.fit(resume_from=tmp_path / "part").status == "completed"
    losses = [
        r["train/loss"]
        for r in read_metrics(tmp_path / "part" / "metrics.jsonl")
        if "train/loss" in r
    ]
    assert losses == pytest.approx(reference, abs=1e-6)


def test_train_command_runs_dpo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tok = chat_tokenizer()
    model_dir = tmp_path / "policy"
    tiny_llama(len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n"
            for p in pairs(12)
        )
    )
    out = tmp_path / "run"
    call_command(
        "train",
        "dpo",
        "--data",
        str(data),
        "--out",
        str(out),
        "--model",
        str(model_dir),
        "--beta",
        "0.2",
        "--variant",
        "rdpo",
        "--alpha",
        "0.01",
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--lr",
        "1e-3",
        "--max-length",
        "40",
        "--probe-prompts",
        "2",
        "--probe-max-new-tokens",
        "4",
        "--no-progress",
    )
    printed = capsys.readouterr().out
    assert (
        "completed: 2/2 steps" in printed
        and "probe: mean length" in printed
        and "kl_seq" in printed
    )
    saved = json.loads((out / "run_config.json").read_text())["config"]
    assert saved["variant"] == "rdpo" and saved["beta"] == 0.2 and saved["alpha"] == 0.01
    assert (out / "model.safetensors").is_file() and (out / "eval_report.json").is_file()
