"""Every causal-LM type transformers knows, built tiny and random from its own default config.

``build(model_type)`` shrinks the type's default config with one generic
function (:func:`shrink_config`) and returns the ``AutoModelForCausalLM`` it
makes. Layer-pattern lists are cut to the shortest prefix that still holds
every layer kind, so a hybrid keeps at least one attention layer and one
recurrent layer. A type that cannot be built raises :class:`NotBuildable`
with the reason; the catalogue test records it.
"""

from __future__ import annotations

import os
import random
import warnings

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from hfself.auto import model_types

# transformers' own causal LMs (hfself's models, registered with the Auto classes at `import hfself`, are not bases)
CATALOGUE = sorted(set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) - model_types())
# Tiny configurations drawn per type: 0 is the project's shrinker, 1.. are drawn (``drawn_values``).
# HFSELF_CATALOGUE_VARIANTS=N runs variants 0..N-1 (the scheduled catalogue check runs more than CI does);
# a comma list ("1,2") runs those variants only.
_VARIANTS_SPEC = os.environ.get("HFSELF_CATALOGUE_VARIANTS", "1")
VARIANTS = [int(v) for v in _VARIANTS_SPEC.split(",") if v] if "," in _VARIANTS_SPEC else range(int(_VARIANTS_SPEC))
CASES = [(model_type, variant) for model_type in CATALOGUE for variant in VARIANTS]
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
    "unpadded_vocab_size": VOCAB, "n_positions": 256, "n_ctx": 256, "max_seq_len": 256, "num_experts": 4,
    "num_local_experts": 4,
    "n_routed_experts": 4, "kv_lora_rank": 16, "q_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8,
    "v_head_dim": 16, "rotary_dim": 8, "num_experts_per_tok": 2, "top_k": 2, "moe_topk": 2, "n_group": 1,
    "num_expert_group": 1, "topk_group": 1, "num_experts_per_token": 2, "n_shared_experts": 1, "mamba_d_head": 16,
    "mamba_n_heads": 8, "mamba_d_state": 16, "ssm_state_size": 16, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
    "linear_key_head_dim": 16, "linear_value_head_dim": 16, "index_head_dim": 16, "index_n_heads": 4,
    "vocab_size_per_layer_input": VOCAB, "hidden_size_per_layer_input": 16,
}
_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "decoder_layers", "encoder_layers")
# Fields a default config may leave None for the model to fail on (real checkpoints set them).
_DERIVED = {"head_dim": 16, "num_key_value_heads": 2, "num_experts_per_tok": 2, "n_routed_experts": 4,
            "n_shared_experts": 1}
# Fields a type's default config lacks or leaves at a value its model cannot run (real checkpoints set them),
# and hybrids whose default config holds no attention layer (real checkpoints do): one attention layer.
_CHECKPOINT_FIELDS = {
    "bamba": {"attn_layer_indices": [1]},
    "granitemoehybrid": {"layer_types": ["mamba", "attention"]},
    "dbrx": {"attn_config": {"rope_theta": 500000.0, "clip_qkv": 8.0, "kv_n_heads": 2}},  # DBRX's own values
    "cohere_compass_text": {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e4}}},
    "lfm2_moe": {"layer_types": ["conv", "full_attention"], "num_dense_layers": 1},
    # a loop model: input, recurrent and output blocks of one layer each
    "dory": {"num_hidden_layers": 3, "n_input_layers": 1, "n_recurrent_layers": 1, "n_output_layers": 1,
             "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]},
    "qwen4_exp_text": {"indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": 16, "indexer_budget": 8,
                       "indexer_compress_ratio": 2},
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
    pattern_key = next((k for k in _PATTERN_KEYS if isinstance(values.get(k), list)), None)
    pattern = values[pattern_key] if pattern_key else None
    n_layers = _layer_count(pattern) if pattern else 2
    tiny = {}
    shared = values.get("num_kv_shared_layers")
    if pattern and isinstance(shared, int) and shared > 0:  # Gemma-3n: the last layers reuse earlier layers' KV
        kinds = list(dict.fromkeys(pattern))  # every kind once among the producers, once among the consumers
        n_layers, tiny["num_kv_shared_layers"] = 2 * len(kinds), len(kinds)
        pattern = kinds * 2
    for key, small in _SIZES.items():
        value = values.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            if key == "head_dim" and isinstance(values.get("qk_rope_head_dim"), int):
                small = _mla_head_dim(values, _SIZES["qk_nope_head_dim"], _SIZES["qk_rope_head_dim"])
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
                                        and key.endswith(("types", "layers", "_theta", "_pattern"))):
            tiny[key] = (pattern if key == pattern_key else value)[:n_layers]
        elif key.endswith("_token_id") and isinstance(value, int) and value >= VOCAB:
            tiny[key] = VOCAB - 1
    if isinstance(values.get("mamba_d_ssm"), int) and "mamba_n_heads" in tiny and "mamba_d_head" in tiny:
        tiny["mamba_d_ssm"] = tiny["mamba_n_heads"] * tiny["mamba_d_head"]  # Falcon-H1: the SSM width is heads x head
    overrides = values.get("per_layer_config")
    if isinstance(overrides, dict):  # per-layer sizes (Gemma 4, dots3): kept for the layers kept, twice the tiny size
        tiny["per_layer_config"] = {index: _tiny_override(layer, values, tiny) for index, layer in overrides.items()
                                    if int(index) < n_layers}
    if "add_cross_attention" in values:  # BERT-style encoders are causal LMs only as decoders
        tiny["is_decoder"] = True
    return tiny


def _mla_head_dim(values: dict, nope: int, rope: int) -> int:
    """MLA's tiny ``head_dim``: the whole query-key width where the config's is (dots3's sliding layers), else
    the rotary part (DeepSeek's)."""
    whole = values.get("head_dim") == values.get("qk_nope_head_dim", 0) + values.get("qk_rope_head_dim", 0)
    return nope + rope if whole else rope


def _tiny_override(layer: dict, values: dict, tiny_top: dict) -> dict:
    """One layer's overrides at twice the tiny size; relations the default keeps (key heads on every query head,
    MLA's whole head width) kept."""
    tiny = {k: 2 * _SIZES[k] if k in _SIZES and isinstance(v, int) else v for k, v in layer.items()}
    if layer.get("num_key_value_heads") == layer.get("num_attention_heads"):  # MLA: K on every head
        tiny["num_key_value_heads"] = tiny.get("num_attention_heads")
    merged, merged_tiny = {**values, **layer}, {**tiny_top, **tiny}
    if isinstance(merged.get("qk_rope_head_dim"), int) and isinstance(merged.get("head_dim"), int):
        tiny["head_dim"] = _mla_head_dim(merged, merged_tiny["qk_nope_head_dim"], merged_tiny["qk_rope_head_dim"])
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


def drawn_values(values: dict, variant: int, model_type: str) -> dict:
    """Variant ``variant`` (> 0) of the tiny sizes: head counts, GQA ratio, head width, low-rank ranks, the MLA
    rope/nope/value split, widths and depth drawn with a fixed seed per (type, variant), for the fields the config has.

    Variant 0 is :func:`tiny_values` alone. Draws stay in the space real checkpoints use (the key heads divide the
    query heads; ``q_lora_rank`` may be None, as in DeepSeek-V2-Lite).
    """
    rng = random.Random(f"{model_type}/{variant}")
    heads = rng.choice([2, 4, 6, 8])
    kv_heads = rng.choice([d for d in range(1, heads + 1) if heads % d == 0])
    per_head = rng.choice([8, 16])
    drawn = {
        ("num_attention_heads", "n_head", "n_heads", "num_heads", "decoder_attention_heads"): heads,
        ("num_key_value_heads", "num_kv_heads", "n_kv_heads"): kv_heads,
        ("hidden_size", "n_embd", "d_model", "n_embed", "dim", "embed_dim"): heads * per_head,
        ("head_dim",): rng.choice([8, 16, 32]),
        ("intermediate_size", "ffn_dim", "n_inner", "d_ff", "decoder_ffn_dim"): rng.choice([64, 96, 160]),
        ("moe_intermediate_size", "shared_expert_intermediate_size", "expert_intermediate_size"):
            rng.choice([16, 48]),
        ("num_experts", "num_local_experts", "n_routed_experts"): rng.choice([4, 8]),
        ("num_experts_per_tok", "top_k", "moe_topk", "num_experts_per_token"): rng.choice([1, 2]),
        ("q_lora_rank",): rng.choice([None, 24, 48]),
        ("kv_lora_rank",): rng.choice([8, 24]),
        ("qk_rope_head_dim",): rng.choice([4, 8, 16]),
        ("qk_nope_head_dim",): rng.choice([8, 16, 24]),
        ("v_head_dim",): rng.choice([8, 16, 24]),
        ("linear_num_key_heads",): rng.choice([1, 2]),
        ("linear_key_head_dim", "linear_value_head_dim"): rng.choice([8, 16]),
        ("index_head_dim",): rng.choice([8, 16]),
        ("index_n_heads",): rng.choice([2, 4]),
        ("rotary_dim",): rng.choice([4, 8]),
    }
    out = {}
    for keys, value in drawn.items():
        for key in keys:
            if key in values and (isinstance(values[key], int) and not isinstance(values[key], bool)
                                  or key == "q_lora_rank" or key in _DERIVED and values[key] is None):
                out[key] = value
    if "linear_num_value_heads" in values and "linear_num_key_heads" in out:
        out["linear_num_value_heads"] = out["linear_num_key_heads"] * rng.choice([1, 2])
    if "head_dim" in out and isinstance(values.get("qk_rope_head_dim"), int):
        out["head_dim"] = out["qk_rope_head_dim"]  # MLA: head_dim is the rotary part
    if out.get("num_experts_per_tok", 0) > 1 and isinstance(values.get("n_group"), int):
        out["n_group"], out["topk_group"] = 1, 1
    depth = rng.choice([2, 3, 4])
    for key in _LAYER_COUNT_KEYS:
        if isinstance(values.get(key), int) and not any(isinstance(values.get(k), list) for k in _PATTERN_KEYS):
            out[key] = depth
    for key, value in values.items():  # per-layer lists (GLM-4-MoE-Lite's mlp_layer_types) follow the depth drawn
        if key in out or not (isinstance(value, list) and value and key.endswith("_types")):
            continue
        if any(values.get(k) == len(value) for k in _LAYER_COUNT_KEYS if k in out):
            out[key] = (value + value[-1:] * depth)[:depth]
    return out


def tiny_config(model_type: str, variant: int = 0, undrawn: tuple = (), **overrides) -> PretrainedConfig:
    """The type's config rebuilt with tiny sizes (so derived fields follow), else its default shrunk in place;
    ``undrawn`` fields keep their tiny value in a drawn variant."""
    config_cls = CONFIG_MAPPING[model_type]
    try:
        defaults = config_cls().to_dict()
        tiny = tiny_values(defaults)
        drawn = drawn_values({**defaults, **tiny}, variant, model_type) if variant else {}
        drawn = {k: v for k, v in drawn.items() if k not in overrides and k not in undrawn}
        config = _validated(config_cls, {**tiny, **_CHECKPOINT_FIELDS.get(model_type, {}), **overrides}, drawn)
    except Exception:
        return shrink_config(config_cls())
    for key in list(vars(config)):  # sub-configs (a multimodal model's text and vision parts)
        if isinstance(vars(config).get(key), PretrainedConfig):
            shrink_config(getattr(config, key), 1)
    return config


def _sub_configs_rebuilt(config: PretrainedConfig, kv_on_every_head: bool = False) -> PretrainedConfig:
    """``config`` with its text sub-config rebuilt from its class's tiny values (so its per-layer configs follow),
    with the fields real checkpoints set; key heads on every query head if asked (multi-head latent attention)."""
    for key in list(vars(config)):
        sub = vars(config).get(key)
        if isinstance(sub, PretrainedConfig) and sub is config.get_text_config():
            tiny = {**tiny_values(type(sub)().to_dict()), **_CHECKPOINT_FIELDS.get(sub.model_type, {})}
            if kv_on_every_head and "num_key_value_heads" in tiny and "num_attention_heads" in tiny:
                tiny["num_key_value_heads"] = tiny["num_attention_heads"]
            setattr(config, key, _validated(type(sub), tiny, {}))
    return config


def _validated(config_cls, tiny: dict, drawn: dict) -> PretrainedConfig:
    """``config_cls`` built from ``tiny`` with the ``drawn`` values over it; a drawn value its validation names
    (a strict config that wants ``q_lora_rank`` set) goes back to its tiny value, then the build is tried again."""
    while True:
        try:
            return config_cls(**{**tiny, **drawn})
        except Exception as err:
            named = [key for key in drawn if key in str(err)]
            if not named:
                if not drawn:
                    raise
                named = list(drawn)  # the error names no field: the tiny values alone
            for key in named:
                del drawn[key]


def _set(config, key, value):
    try:
        setattr(config, key, value)
    except Exception:  # read-only or validated fields keep their value
        pass


def build(model_type: str, seed: int = 0, attn_implementation: str = "eager", variant: int = 0) -> torch.nn.Module:
    """A tiny random ``AutoModelForCausalLM`` of ``model_type`` (eval mode, float32); ``variant`` > 0 draws other
    sizes (:func:`drawn_values`)."""
    attempts = [
        lambda: tiny_config(model_type, variant),
        # multi-head latent attention expands K to every query head
        lambda: tiny_config(model_type, variant, num_key_value_heads=tiny_config(model_type, variant)
                            .get_text_config().to_dict().get("num_attention_heads")),  # (per-layer configs too)
    ]
    if variant:  # a drawn head width that the model ties to hidden_size / heads (Helium's o_proj)
        attempts.append(lambda: tiny_config(model_type, variant, undrawn=("head_dim",)))
    attempts.append(lambda: _sub_configs_rebuilt(tiny_config(model_type, variant)))
    attempts.append(lambda: _sub_configs_rebuilt(tiny_config(model_type, variant), kv_on_every_head=True))  # dots3
    if not variant:
        attempts.append(lambda: shrink_config(CONFIG_MAPPING[model_type]()))
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


def build_or_skip(model_type: str, variant: int = 0) -> torch.nn.Module:
    """``build(model_type, variant=variant)``, or skip the calling test with the reason it cannot be built."""
    import pytest

    try:
        return build(model_type, variant=variant)
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
