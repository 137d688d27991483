"""Every causal-LM type transformers knows, built tiny and random from its own default config.

``build(model_type)`` shrinks the type's default config with one generic
function (:func:`shrink_config`) and returns the ``AutoModelForCausalLM`` it
makes. Layer-pattern lists are cut to the shortest prefix that still holds
every layer kind, so a hybrid keeps at least one attention layer and one
recurrent layer. A type that cannot be built raises :class:`NotBuildable`
with the reason; the catalogue test records it.
"""

from __future__ import annotations

import warnings

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from hfself.auto import model_types

# transformers' own causal LMs: hfself's models join the Auto tables at `import hfself`, and are not bases
CATALOGUE = sorted(set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) - model_types())
VOCAB = 512
MAX_LAYERS = 8

# Size fields and their tiny values (a field is only set when the config has it).
_SIZES = {
    "hidden_size": 64, "n_embd": 64, "d_model": 64, "n_embed": 64, "dim": 64, "embed_dim": 64,
    "intermediate_size": 128, "ffn_dim": 128, "n_inner": 128, "d_ff": 128, "decoder_ffn_dim": 128,
    "encoder_ffn_dim": 128, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32,
    "expert_intermediate_size": 32, "num_attention_heads": 4, "n_head": 4, "n_heads": 4, "num_heads": 4,
    "decoder_attention_heads": 4, "encoder_attention_heads": 4, "num_key_value_heads": 2, "num_kv_heads": 2,
    "n_kv_heads": 2, "head_dim": 16, "num_hidden_layers": 2, "n_layer": 2, "n_layers": 2, "num_layers": 2,
    "decoder_layers": 2, "encoder_layers": 2, "vocab_size": VOCAB, "max_position_embeddings": 256,
    "n_positions": 256, "n_ctx": 256, "max_seq_len": 256, "num_experts": 4, "num_local_experts": 4,
    "n_routed_experts": 4, "kv_lora_rank": 16, "q_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8,
    "v_head_dim": 16, "rotary_dim": 8, "num_experts_per_tok": 2, "top_k": 2, "moe_topk": 2, "n_group": 1,
    "topk_group": 1, "num_experts_per_token": 2, "n_shared_experts": 1, "mamba_d_head": 16, "mamba_n_heads": 8,
    "mamba_d_state": 16, "ssm_state_size": 16, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
    "linear_key_head_dim": 16, "linear_value_head_dim": 16, "index_head_dim": 16, "index_n_heads": 4,
    "vocab_size_per_layer_input": VOCAB, "hidden_size_per_layer_input": 16,
}
_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "decoder_layers")
# Fields a default config may leave None for the model to fail on (real checkpoints set them).
_DERIVED = {"head_dim": 16, "num_key_value_heads": 2, "num_experts_per_tok": 2}
# Hybrids whose *default* config holds no attention layer (real checkpoints do): one attention layer.
_HYBRID_PATTERNS = {
    "bamba": {"attn_layer_indices": [1]},
    "granitemoehybrid": {"layer_types": ["mamba", "attention"]},
}
_PATTERN_KEYS = ("layer_types", "layers_block_type", "attention_layers", "block_types")


class NotBuildable(Exception):
    """This model type cannot be built tiny from its config here (the message says why)."""


def _layer_count(pattern: list) -> int:
    """The shortest prefix (at least 2) holding every kind of layer in ``pattern``."""
    needed = {kind: pattern.index(kind) for kind in dict.fromkeys(pattern)}
    return max(2, min(MAX_LAYERS, max(needed.values()) + 1))


def tiny_values(values: dict) -> dict:
    """The tiny value of every size field (and per-layer list) in a config's ``to_dict()``."""
    pattern = next((values[k] for k in _PATTERN_KEYS if isinstance(values.get(k), list)), None)
    n_layers = _layer_count(pattern) if pattern else 2
    tiny = {}
    for key, small in _SIZES.items():
        value = values.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            if key == "head_dim" and isinstance(values.get("qk_rope_head_dim"), int):
                small = _SIZES["qk_rope_head_dim"]  # MLA: head_dim is the rotary part
            tiny[key] = small if key in ("head_dim", *_LAYER_COUNT_KEYS) else min(small, value)
            if key in _LAYER_COUNT_KEYS:
                tiny[key] = n_layers
    for key, small in _DERIVED.items():
        if key in values and values[key] is None:
            tiny[key] = small
    for key, value in values.items():
        if key.endswith("_layer_period") and isinstance(value, int):  # Jamba: attention every 2nd layer
            tiny[key], tiny[key.replace("_period", "_offset")] = 2, 1
    for key, value in values.items():  # per-layer lists follow the layer count
        if isinstance(value, list) and (key in _PATTERN_KEYS or len(value) > n_layers
                                        and key.endswith(("types", "layers", "_theta"))):
            tiny[key] = value[:n_layers]
        elif key.endswith("_token_id") and isinstance(value, int) and value >= VOCAB:
            tiny[key] = VOCAB - 1
    overrides = values.get("per_layer_config")
    if isinstance(overrides, dict):  # per-layer sizes (Gemma 4, dots3): kept for the layers kept, twice the tiny size
        tiny["per_layer_config"] = {index: _tiny_override(layer) for index, layer in overrides.items()
                                    if int(index) < n_layers}
    if "add_cross_attention" in values:  # BERT-style encoders are causal LMs only as decoders
        tiny["is_decoder"] = True
    return tiny


def _tiny_override(layer: dict) -> dict:
    tiny = {k: 2 * _SIZES[k] if k in _SIZES and isinstance(v, int) else v for k, v in layer.items()}
    if layer.get("num_key_value_heads") == layer.get("num_attention_heads"):  # MLA: K on every head
        tiny["num_key_value_heads"] = tiny.get("num_attention_heads")
    return {k: v for k, v in tiny.items() if v is not None}


def shrink_config(config: PretrainedConfig, depth: int = 0) -> PretrainedConfig:
    """Set every size field ``config`` has (and its sub-configs have) to a tiny value, in place."""
    for key, value in tiny_values(config.to_dict()).items():
        _set(config, key, value)
    for key in list(vars(config)):
        sub = vars(config).get(key)
        if isinstance(sub, PretrainedConfig) and depth < 3:
            shrink_config(sub, depth + 1)
    return config


def tiny_config(model_type: str, **overrides) -> PretrainedConfig:
    """The type's config rebuilt with tiny sizes (so derived fields follow), else its default shrunk in place."""
    config_cls = CONFIG_MAPPING[model_type]
    try:
        values = {**tiny_values(config_cls().to_dict()), **_HYBRID_PATTERNS.get(model_type, {}), **overrides}
        config = config_cls(**values)
    except Exception:
        return shrink_config(config_cls())
    for key in list(vars(config)):  # sub-configs (a multimodal model's text and vision parts)
        if isinstance(vars(config).get(key), PretrainedConfig):
            shrink_config(getattr(config, key), 1)
    return config


def _set(config, key, value):
    try:
        setattr(config, key, value)
    except Exception:  # read-only or validated fields keep their value
        pass


def build(model_type: str, seed: int = 0, attn_implementation: str = "eager") -> torch.nn.Module:
    """A tiny random ``AutoModelForCausalLM`` of ``model_type`` (eval mode, float32)."""
    attempts = [
        lambda: tiny_config(model_type),
        # multi-head latent attention expands K to every query head
        lambda: tiny_config(model_type, num_key_value_heads=_SIZES["num_attention_heads"]),
        lambda: shrink_config(CONFIG_MAPPING[model_type]()),
    ]
    for attempt in attempts:
        try:
            return _build(attempt(), seed, attn_implementation)
        except ImportError as err:
            raise NotBuildable(f"needs a package that is not installed: {str(err).strip().splitlines()[0][:120]}")
        except Exception as err:
            failure = err
    raise NotBuildable(f"{type(failure).__name__}: {str(failure).strip().splitlines()[0][:160]}") from failure


def _build(config, seed, attn_implementation):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    model = model.float().eval()
    with torch.no_grad():  # the shrunk config must make a model that runs at all
        model(input_ids=torch.arange(1, 7).unsqueeze(0), use_cache=False)
    return model


def build_or_skip(model_type: str) -> torch.nn.Module:
    """``build(model_type)``, or skip the calling test with the reason it cannot be built."""
    import pytest

    try:
        return build(model_type)
    except NotBuildable as err:
        pytest.skip(f"not buildable tiny: {err}")


def catalogue_ids(model, length: int = 10, seed: int = 1) -> torch.Tensor:
    """(1, length) token ids inside the model's vocabulary."""
    vocab = model.config.get_text_config().vocab_size
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, min(vocab, 500), (1, length), generator=g)


def next_token_changed(ids: torch.Tensor) -> torch.Tensor:
    """``ids`` with only its last token changed (the causality probe)."""
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 400 + 3
    return changed
