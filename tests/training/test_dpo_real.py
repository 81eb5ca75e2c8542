"""DPO with the real packaged SmolLM2-135M-Instruct on real HH-RLHF pairs (slow: real weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import HH_RLHF
from training.callbacks import read_metrics
from training.config import DPOConfig
from training.data import load_pairs
from training.packing import PACKED_ATTENTION, enable_packed_attention, pack, pad, sequence_logps
from training.policy import (
    DEFAULT_POLICY,
    PairEncoder,
    load_policy,
    load_tokenizer,
    pair_prompt,
    resolve_policy,
)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread() -> object:
    """One torch thread: on a shared, loaded CPU two threads wait on each other (measured 2-3x
    slower here); on a quiet machine the difference is small for a model this size."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_packaged_gguf_converts_to_a_safetensors_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAIRWISE_MODEL_CACHE", str(tmp_path))
    folder = Path(resolve_policy(None))
    assert folder == tmp_path / DEFAULT_POLICY
    assert (folder / "model.safetensors").is_file()
    assert json.loads((folder / "config.json").read_text()).get("quantization_config") is None
    model, tokenizer = load_policy(None), load_tokenizer(None)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1] :])
    assert resolve_policy("smollm2-135m-instruct") == str(folder)  # aliases reuse the cache


def test_packed_equals_padded_on_the_real_model_and_data() -> None:
    model, tokenizer = load_policy(None).eval(), load_tokenizer(None)
    enable_packed_attention(model)
    assert model.config._attn_implementation == PACKED_ATTENTION
    encoder = PairEncoder(tokenizer, max_length=160)
    encoded = [
        encoder.encode(pair_prompt(p), p.chosen, p.rejected) for p in load_pairs(HH_RLHF)[:3]
    ]
    prompts = [e.prompt for e in encoded] * 2
    completions = [e.chosen for e in encoded] + [e.rejected for e in encoded]
    with torch.no_grad():
        packed = sequence_logps(model, pack(prompts, completions))
        padded = sequence_logps(model, pad(prompts, completions, pad_id=tokenizer.pad_token_id))
    assert packed.shape == (6,) and (packed < 0).all()
    # 30 layers in fp32 over sums of up to ~100 token log-probs: agreement to ~1e-4 relative.
    torch.testing.assert_close(packed, padded, atol=2e-3, rtol=1e-4)


def test_a_few_real_dpo_steps_train_and_save_a_loadable_policy(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from training.trainers.dpo import run

    pairs = load_pairs(HH_RLHF)[:10]
    config = DPOConfig.from_dict(
        {
            "max_steps": 2,
            "batch_size": 2,
            "max_length": 128,
            "lr": 5e-6,
            "probe_prompts": 2,
            "probe_max_new_tokens": 16,
            "eval_batch_size": 4,
        }
    )
    result = run(config, train_pairs=pairs[:6], eval_pairs=pairs[6:], out_dir=tmp_path)
    assert result.status == "completed"
    rows = read_metrics(tmp_path / "metrics.jsonl")
    first = rows[0]
    assert first["train/loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1
    final = rows[-1]
    for name in (
        "eval/rewards/accuracies",
        "eval/margin_len_corr",
        "eval/gen/len_mean",
        "eval/gen/kl_seq",
        "eval/gen/len_ratio_vs_ref",
        "eval/gen/truncated_rate",
    ):
        assert name in final
    assert json.loads((tmp_path / "run_config.json").read_text())["packed"] is True
    policy = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert policy.config.model_type == "llama"
