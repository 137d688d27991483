"""Tiny random-init causal LMs of many architectures, built from configs (no Hub)."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers import (BloomConfig, FalconConfig, Gemma2Config, GemmaConfig, GPT2Config, GPTJConfig, GPTNeoXConfig,
                          LlamaConfig, MistralConfig, MixtralConfig, MptConfig, Olmo2Config, OPTConfig, Phi3Config,
                          PhiConfig, Qwen2Config, Qwen3Config, StableLmConfig, Starcoder2Config)

from hfself.arch import inspect_model
from hfself.data import DEFAULT_MODEL

VOCAB = 4096
_common = dict(vocab_size=VOCAB, pad_token_id=1, bos_token_id=0, eos_token_id=0)
_rope = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, **_common)

CONFIGS = {
    "llama": lambda: LlamaConfig(**_rope),
    "mistral": lambda: MistralConfig(**_rope, sliding_window=None),
    "mixtral": lambda: MixtralConfig(**_rope, num_local_experts=2, num_experts_per_tok=1),
    "qwen2": lambda: Qwen2Config(**_rope),
    "qwen3": lambda: Qwen3Config(**_rope, head_dim=16),
    "gemma": lambda: GemmaConfig(**_rope, head_dim=16),
    "gemma2": lambda: Gemma2Config(**_rope, head_dim=16, sliding_window=64),
    "olmo2": lambda: Olmo2Config(**_rope),
    "stablelm": lambda: StableLmConfig(**_rope),
    "starcoder2": lambda: Starcoder2Config(**_rope, sliding_window=None),
    "phi": lambda: PhiConfig(**_rope),
    "phi3": lambda: Phi3Config(**_rope),
    "gpt2": lambda: GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, **_common),
    "gptj": lambda: GPTJConfig(n_embd=64, n_layer=2, n_head=4, n_positions=256, rotary_dim=8, **_common),
    "gpt_neox": lambda: GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=256, **_common),
    "opt": lambda: OPTConfig(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                             word_embed_proj_dim=64, max_position_embeddings=256, **_common),
    "falcon": lambda: FalconConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, alibi=False,
                                   new_decoder_architecture=False, multi_query=False, **_common),
    "falcon_mq": lambda: FalconConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      new_decoder_architecture=False, multi_query=True, **_common),
    "falcon_new": lambda: FalconConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_kv_heads=2,
                                       new_decoder_architecture=True, **_common),
    "falcon_alibi": lambda: FalconConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, alibi=True,
                                         new_decoder_architecture=False, multi_query=False, **_common),
    "bloom": lambda: BloomConfig(hidden_size=64, n_layer=2, n_head=4, **_common),
    "mpt": lambda: MptConfig(d_model=64, n_heads=4, n_layers=2, max_seq_len=256, **_common),
}

# The matrix the identity tests run over (issue: at least 8 incl. these).
IDENTITY_ARCHS = ["llama", "mistral", "qwen2", "gemma", "phi3", "gpt2", "gpt_neox", "opt", "falcon_new", "bloom"]

NO_ROPE = {"gpt2", "opt", "bloom", "mpt", "falcon_alibi"}


def tiny_model(name: str, seed: int = 0, attn_implementation: str = "eager"):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(CONFIGS[name](), attn_implementation=attn_implementation)
    return model.eval()


def tokenizer():
    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    return tok


def config_only_model(directory) -> str:
    """A copy of the embedded default without its weights: loading it gives a seeded random init."""
    import shutil
    from pathlib import Path

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(DEFAULT_MODEL) / name, directory / name)
    return str(directory)


def sample_ids(batch: int = 2, length: int = 12, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, VOCAB, (batch, length), generator=g)


def q_unit_masks(model) -> dict[str, torch.Tensor]:
    """Parameter name -> bool mask of its entries that produce query units (as ``hfself.arch`` measured them)."""
    names = {id(p): n for n, p in model.named_parameters()}
    masks = {}
    for layer in inspect_model(model).layers:
        for t in layer.targets:
            if t.q_index is None:
                continue
            keep = torch.zeros(t.out_features, dtype=torch.bool)
            keep[t.q_index] = True
            is_conv1d = hasattr(t.module, "nf")  # GPT-2's Conv1D stores (in, out)
            for name, p in t.module.named_parameters(recurse=False):
                shape = [1] * p.dim()
                shape[1 if (is_conv1d and name == "weight") else 0] = t.out_features
                masks[names[id(p)]] = keep.view(shape).expand_as(p)
    return masks


def query_units_moved(masks: dict[str, torch.Tensor], before: dict[str, torch.Tensor],
                      after: dict[str, torch.Tensor]) -> dict[str, bool]:
    """Assert that every entry outside the query units is unchanged from ``before`` to ``after``; return, per
    parameter holding query units, whether they moved."""
    moved = {}
    for n, old in before.items():
        new, mask = after[n], masks.get(n)
        if mask is None:
            assert torch.equal(new, old), f"{n} is not a query parameter but changed"
        else:
            assert torch.equal(new[~mask], old[~mask]), f"K/V units of {n} changed"
            moved[n] = not torch.equal(new[mask], old[mask])
    return moved
