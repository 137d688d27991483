"""hfself.arch over many tiny architectures: the Q/K positions it reports are the real ones."""

import pytest
import torch
from tiny_models import CONFIGS, NO_ROPE, sample_ids, tiny_model

from hfself import plugins
from hfself.arch import (ArchAdapter, LayoutError, UnsupportedArchitectureError, blocks_layout,
                         heads_interleaved_layout, inspect_model, kv_groups_layout, register_adapter, residual_of)

ARCHS = sorted(CONFIGS)


def _attentions_with_delta(model, which: str, scale: float = 3.0):
    """Attention probabilities after adding a fixed random bias at Q, K or V positions of every projection."""
    info = inspect_model(model)
    handles = []
    g = torch.Generator().manual_seed(7)
    for layer in info.layers:
        for t in layer.targets:
            covered = torch.zeros(t.out_features, dtype=torch.bool)
            for idx in (t.q_index, t.k_index):
                if idx is not None:
                    covered[idx] = True
            if which == "v":
                mask = ~covered
            else:
                idx = t.q_index if which == "q" else t.k_index
                if idx is None:
                    continue
                mask = torch.zeros(t.out_features, dtype=torch.bool)
                mask[idx] = True
            delta = torch.randn(t.out_features, generator=g) * scale * mask
            handles.append(t.module.register_forward_hook(lambda m, i, o, d=delta: o + d))
    try:
        with torch.no_grad():
            return model(sample_ids(), output_attentions=True).attentions
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("name", ARCHS)
def test_inspect_counts(name):
    model = tiny_model(name)
    info = inspect_model(model)
    assert info.num_layers == 2
    assert info.hidden_size == 64
    assert info.num_heads * info.head_dim == 64
    assert len(info.layers) == 2 and all(layer.targets for layer in info.layers)
    q = torch.cat([t.q_index for t in info.layers[0].targets if t.q_index is not None])
    k = torch.cat([t.k_index for t in info.layers[0].targets if t.k_index is not None])
    assert len(q) == info.q_dim and len(k) == info.k_dim
    assert info.positional == ("rope" if name not in NO_ROPE else info.positional)
    assert info.source == "discovered"


@pytest.mark.parametrize("name", ARCHS)
def test_qk_positions_are_real(name):
    model = tiny_model(name)
    with torch.no_grad():
        base = model(sample_ids(), output_attentions=True).attentions[0]
    # In the first layer (later layers see changed inputs): V positions leave the
    # attention probabilities untouched, Q positions move them.
    torch.testing.assert_close(base, _attentions_with_delta(model, "v")[0], rtol=0, atol=1e-6)
    assert (base - _attentions_with_delta(model, "q")[0]).abs().max() > 1e-3


@pytest.mark.parametrize("name", sorted(NO_ROPE))
def test_constant_key_bias_cancels_without_rope(name):
    """Q-vs-K note: without RoPE a key bias constant over positions shifts every score of a row
    by the same q·b, so softmax ignores it. This also proves K positions are not Q positions."""
    model = tiny_model(name)
    with torch.no_grad():
        base = model(sample_ids(), output_attentions=True).attentions[0]
    torch.testing.assert_close(base, _attentions_with_delta(model, "k")[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["llama", "gpt_neox", "phi3", "falcon_new"])
def test_constant_key_bias_matters_with_rope(name):
    model = tiny_model(name)
    with torch.no_grad():
        base = model(sample_ids(), output_attentions=True).attentions[0]
    assert (base - _attentions_with_delta(model, "k")[0]).abs().max() > 1e-3


def test_layouts_match_reference_reshapes():
    nh, nkv, hd = 4, 2, 3
    x = torch.arange((nh + 2 * nkv) * hd)
    # GPT-NeoX / BLOOM: view(nh, 3*hd) then chunk
    inter = torch.arange(3 * nh * hd)
    q, k = heads_interleaved_layout(nh, nh, hd)
    ref_q, ref_k, _ = inter.view(nh, 3 * hd).chunk(3, dim=-1)
    assert torch.equal(q, ref_q.flatten()) and torch.equal(k, ref_k.flatten())
    # Falcon new decoder architecture: view(nkv, G+2, hd)
    q, k = kv_groups_layout(nh, nkv, hd)
    grouped = x.view(nkv, nh // nkv + 2, hd)
    assert torch.equal(q, grouped[:, :-2].flatten()) and torch.equal(k, grouped[:, -2].flatten())
    # Phi-3: [q | k | v]
    q, k = blocks_layout(nh, nkv, hd)
    assert torch.equal(q, x[: nh * hd]) and torch.equal(k, x[nh * hd: nh * hd + nkv * hd])


def test_residual_hook_point_is_the_layer_output():
    model = tiny_model("llama")
    info = inspect_model(model)
    seen = {}
    h = info.layers[1].layer.register_forward_hook(lambda m, i, o: seen.setdefault("x", residual_of(o)))
    with torch.no_grad():
        out = model(sample_ids(), output_hidden_states=True)
    h.remove()
    # hidden_states[i + 1] is the residual stream after layer i; for the last layer
    # transformers stores it after the final norm, so pin layer 0 against hidden_states[1].
    seen0 = {}
    h = info.layers[0].layer.register_forward_hook(lambda m, i, o: seen0.setdefault("x", residual_of(o)))
    with torch.no_grad():
        model(sample_ids())
    h.remove()
    torch.testing.assert_close(seen0["x"], out.hidden_states[1])
    assert seen["x"].shape == (2, 12, 64)


def test_unknown_model_type_is_discovered_by_structure():
    model = tiny_model("gpt_neox")
    model.config.model_type = "totally_new_llm"
    info = inspect_model(model)
    assert info.model_type == "totally_new_llm" and info.fused_qkv
    assert all("measured" in t.how for layer in info.layers for t in layer.targets)


def test_model_without_attention_error_says_why_and_how():
    from transformers import AutoModelForCausalLM, MambaConfig

    model = AutoModelForCausalLM.from_config(MambaConfig(hidden_size=32, num_hidden_layers=2, vocab_size=256,
                                                         state_size=4))
    with pytest.raises(UnsupportedArchitectureError) as err:
        inspect_model(model)
    msg = str(err.value)
    assert "no self-attention" in msg and "hfself_register_arch_adapters" in msg


def test_register_adapter_for_new_type():
    """A registered adapter wins over discovery: it marks layer 1 as having no attention (discovery finds two)."""
    model = tiny_model("llama")
    assert len(inspect_model(model).attention_layers) == 2
    model.config.model_type = "my_llm"
    register_adapter("my_llm", ArchAdapter(layers_path="model.layers", attention="self_attn",
                                           q_proj="q_proj", k_proj="k_proj", has_attention=lambda i, layer: i == 0))
    try:
        info = inspect_model(model)
        assert info.num_layers == 2 and [layer.has_attention for layer in info.layers] == [True, False]
    finally:
        from hfself import arch
        arch._registered.pop("my_llm")


def test_adapter_must_override_something():
    with pytest.raises(ValueError):
        ArchAdapter()
    with pytest.raises(ValueError, match="layout"):
        ArchAdapter(qkv_proj="c_attn")


def test_adapter_layout_contradicted_by_measurement_is_an_error():
    model = tiny_model("gpt2")
    model.config.model_type = "wrong_layout_llm"
    register_adapter("wrong_layout_llm", ArchAdapter(qkv_proj="c_attn", layout=heads_interleaved_layout))
    try:
        with pytest.raises(LayoutError, match="contradicted"):
            inspect_model(model)
        register_adapter("wrong_layout_llm", ArchAdapter(qkv_proj="c_attn", layout=blocks_layout))
        assert "confirmed by measurement" in inspect_model(model).layers[0].targets[0].how
    finally:
        from hfself import arch
        arch._registered.pop("wrong_layout_llm")


def test_hybrid_layers_without_attention_are_skipped():
    from catalogue import build

    info = inspect_model(build("qwen3_next"))
    kinds = [layer.has_attention for layer in info.layers]
    assert True in kinds and False in kinds
    gated = info.attention_layers[0].targets[0]  # q_proj also carries the output gate: half its units are Q
    assert gated.out_features == 2 * len(gated.q_index)


def test_adapter_can_mark_layers_without_attention():
    model = tiny_model("llama")
    model.config.model_type = "half_attention_llm"
    register_adapter("half_attention_llm", ArchAdapter(has_attention=lambda i, layer: i == 1))
    try:
        assert [layer.has_attention for layer in inspect_model(model).layers] == [False, True]
    finally:
        from hfself import arch
        arch._registered.pop("half_attention_llm")


def test_plugin_registered_adapter():
    import types

    from hfself import hookimpl

    mod = types.ModuleType("adapter_plugin")

    @hookimpl
    def hfself_register_arch_adapters(register):
        register("plugin_llm", ArchAdapter(layers_path="model.layers", attention="self_attn",
                                           q_proj="q_proj", k_proj="k_proj", has_attention=lambda i, layer: i == 0))

    mod.hfself_register_arch_adapters = hfself_register_arch_adapters
    plugins.register_plugin(mod, name="adapter_plugin")
    try:
        model = tiny_model("llama")
        model.config.model_type = "plugin_llm"
        info = inspect_model(model)  # the plugin's adapter, not discovery: layer 1 has no attention
        assert info.model_type == "plugin_llm" and [layer.has_attention for layer in info.layers] == [True, False]
    finally:
        plugins.unregister_plugin("adapter_plugin")


def test_units_that_cannot_move_attention_are_refused():
    """zaya mixes Q and K after its projections and starts with a zero key scale: what the measurement
    labels as query units moves nothing, and the verification on the scratch copy refuses it."""
    from catalogue import build

    with pytest.raises(LayoutError, match="does not change its attention output"):
        inspect_model(build("zaya"))


def test_an_ngram_stream_attention_is_measured_per_position():
    """prophetnet's relative-position table is a projection too, but not one vector per position: never a target."""
    from catalogue import build

    info = inspect_model(build("prophetnet"))
    names = {t.name for layer in info.attention_layers for t in layer.targets}
    assert names == {"query_proj", "key_proj"}
