"""A tiny random causal LM and a word-level tokenizer for PPO tests (built in memory, no files)."""
from __future__ import annotations

from typing import Any

WORDS = ["yes", "no", "cat", "dog", "sun", "sea", "red", "blue", "one", "two", "up", "down", "hot", "cold"]
SPECIAL = ["<pad>", "<eos>", "<unk>"]


def tiny_policy_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL + WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def tiny_policy(tokenizer: Any, *, seed: int = 0, hidden: int = 32) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def tiny_prompts(n: int, *, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS[2:]) for _ in range(rng.randint(2, 6))) + f" {WORDS[2 + i % 12]}"
            for i in range(n)]
