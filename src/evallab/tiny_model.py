"""Build a tiny random-weight causal LM locally: no network, deterministic by seed.

The demo and the tests need a real model that transformers, lm-eval and vLLM all load. A 2-layer
Llama with a byte-level BPE tokenizer trained on generated text is enough, builds in seconds, and
is byte-identical across builds with the same seed.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

__all__ = ["build_tiny_model", "tiny_corpus"]

_WORD_TEXT = (
    "the a one two three four five six seven eight nine ten red green blue cat dog bird fish "
    "tree house river city answer question is are was yes no true false plus minus equals "
    "capital of france paris spain madrid italy rome color sky grass sun moon water fire"
)
_WORDS = _WORD_TEXT.split()

_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_corpus(seed: int, lines: int = 4000) -> list[str]:
    """A deterministic corpus of short sentences, digits and code-like lines."""
    rng = random.Random(seed)
    out = []
    for i in range(lines):
        kind = i % 3
        if kind == 0:
            out.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 12))))
        elif kind == 1:
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            out.append(f"Question: {a} plus {b} equals? Answer: {a + b}")
        else:
            out.append(f"def f_{i}(x):\n    return x * {rng.randint(1, 9)} + {rng.randint(0, 9)}")
    return out


def build_tiny_model(
    out_dir: Path, *, seed: int = 0, layers: int = 2, hidden: int = 256, vocab_size: int = 1024
) -> Path:
    """Build (or rebuild) a tiny Llama + tokenizer in ``out_dir``.

    Args:
        out_dir: Destination folder; replaced if it exists.
        seed: Seeds the weights and the tokenizer's corpus.
        layers: Decoder layers.
        hidden: Hidden size.
        vocab_size: Tokenizer vocabulary size.

    Returns:
        ``out_dir``, holding config.json, safetensors weights and tokenizer files.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tmp = out_dir.with_name(out_dir.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<s>", "</s>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tiny_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = _CHAT_TEMPLATE
    fast.save_pretrained(tmp)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 64),
        max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.eval()
    model.save_pretrained(tmp, safe_serialization=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
