"""TemporalLoraForCausalLM: a frozen backbone, one LoRA adapter per domain, a time mixer routing per token."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

from hfself import persist
from hfself.arch import inspect_model, is_peft_model, unwrap_model
from hfself.wrapper import LMWrapper, model_card

from .config import TemporalLoraConfig
from .layer import TimeMixer, TokenMixing

ADAPTER_DIR = "adapters"
MIXER_WEIGHTS = "mixer.safetensors"
BASE_WEIGHTS = "backbone.safetensors"
TRAINABLE_WEIGHTS = "model.safetensors"  # adapters + mixer under this model's own keys: what Trainer resumes from


class TemporalLoraForCausalLM(LMWrapper):
    """Frozen backbone ("eternity") + one LoRA adapter per domain ("epoch") + a per-token time mixer.

        model = TemporalLoraForCausalLM.from_base(backbone, TemporalLoraConfig(domains=["shakespeare", "python"]))
        with model.only_domain("python"): ...          # train or run one adapter (one-hot weights)
        out = model(input_ids)                          # routed: out.routing_weights is (B, T, E)
        model.save_pretrained("temporal")               # config, peft adapters, mixer, model card
        model = TemporalLoraForCausalLM.from_pretrained("temporal")

    One forward pass: the mixer reads the residual stream entering
    ``router_layer`` and the adapters sit on that layer and those after it, so
    the KV cache works and cached generation equals uncached. The backbone
    never trains; ``adapters_disabled()`` gives the bare backbone.
    """

    config_class = TemporalLoraConfig
    hub_commit_message = "Upload hfself temporal LoRA"

    def __init__(self, config: TemporalLoraConfig, base_model: nn.Module):
        super().__init__(config)
        from peft import LoraConfig, get_peft_model

        if not config.domains:
            raise ValueError("TemporalLoraConfig needs at least one domain")
        if is_peft_model(base_model):
            raise ValueError("pass the plain backbone; TemporalLoraForCausalLM adds its own LoRA adapters")
        arch = inspect_model(base_model)
        arch.require_one_residual_stream("temporal LoRA's router", base_model)
        attention_ids = [info.index for info in arch.attention_layers]
        if config.router_layer is None:  # a quarter of the way up, at an attention layer (hybrids: the next one)
            wanted = max(1, arch.num_layers // 4)
            config.router_layer = next((i for i in attention_ids if i >= wanted), attention_ids[-1])
        if config.router_layer >= arch.num_layers:
            raise ValueError(f"router_layer {config.router_layer} must be below the {arch.num_layers} decoder layers")
        adapted = [i for i in attention_ids if i >= config.router_layer]
        if not adapted and not config.target_modules:
            raise ValueError(f"router_layer {config.router_layer}: no attention layer at or above it to adapt "
                             f"(attention layers: {attention_ids})")
        base_model.requires_grad_(False)
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=config.target_modules or _default_targets(base_model, arch),
                          task_type="CAUSAL_LM",
                          layers_to_transform=adapted if not config.target_modules else
                          list(range(config.router_layer, arch.num_layers)))
        peft_model = get_peft_model(base_model, lora, adapter_name=config.domains[0])
        for name in config.domains[1:]:
            peft_model.add_adapter(name, lora)
        peft_model.base_model.set_adapter(list(config.domains))  # every adapter active; the hooks weight them
        self.lm = peft_model
        self.arch = arch
        self.mixer = TimeMixer(arch.hidden_size, len(config.domains), config.router_hidden_dim,
                               config.router_temperature).to(next(base_model.parameters()).device)
        from peft.tuners.lora import LoraLayer

        lora_layers = [m for m in peft_model.modules() if isinstance(m, LoraLayer)]
        self.mixing = TokenMixing(lora_layers, list(config.domains), arch.layers[config.router_layer].layer,
                                  self._weights_for)
        self.mixing.attach()
        self._forced: torch.Tensor | None = None  # (E,) one-hot or fixed weights, else None (routed)
        self.set_trainable("adapters")
        self._share_lm_interface()

    @classmethod
    def from_base(cls, base_model: nn.Module, config: TemporalLoraConfig | None = None,
                  **kwargs) -> "TemporalLoraForCausalLM":
        """Put fresh adapters and a fresh mixer on ``base_model`` (any supported causal LM)."""
        config = config or TemporalLoraConfig(**kwargs)
        config.base_model_name_or_path = config.base_model_name_or_path or base_model.config.name_or_path or None
        config.base_config = base_model.config.to_dict()
        return cls(config, base_model)

    # ------------------------------------------------------------------ routing

    @property
    def domains(self) -> list[str]:
        return list(self.config.domains)

    def _weights_for(self, hidden: torch.Tensor) -> torch.Tensor:
        if self._forced is not None:
            return self._forced.to(hidden.device, hidden.dtype).expand(*hidden.shape[:2], -1)  # (B, T, E)
        return self.mixer(hidden).to(hidden.dtype)  # (B, T, E)

    @contextmanager
    def fixed_weights(self, weights):
        """Run with the same adapter weights (E,) on every token instead of the mixer's."""
        previous = self._forced
        self._forced = torch.as_tensor(weights, dtype=torch.float32)
        try:
            yield self
        finally:
            self._forced = previous

    @contextmanager
    def only_domain(self, name: str):
        """One adapter alone (one-hot weights), e.g. to train or evaluate it."""
        if name not in self.domains:
            raise ValueError(f"unknown domain {name!r}; this model has {self.domains}")
        with self.fixed_weights(F.one_hot(torch.tensor(self.domains.index(name)), len(self.domains)).float()):
            yield self

    @contextmanager
    def adapters_disabled(self):
        """The bare backbone: peft's adapters off and the routing hooks removed."""
        self.mixing.detach()
        try:
            with self.lm.disable_adapter():
                yield self.lm
        finally:
            self.mixing.attach()

    def merge_and_unload(self, domain: str | None = None) -> nn.Module:
        """A plain transformers model with one domain's adapter merged into the backbone (``domain``, or the only
        one): what ``only_domain(domain)`` computes. Routing per token between adapters has no static form, so
        with several domains one must be named. This wrapper is spent afterwards."""
        if domain is None and len(self.domains) > 1:
            raise ValueError(f"per-token routing over {self.domains} cannot be merged into one set of weights; "
                             "name the domain to keep: merge_and_unload(domain=...)")
        domain = domain or self.domains[0]
        if domain not in self.domains:
            raise ValueError(f"unknown domain {domain!r}; this model has {self.domains}")
        self.mixing.detach()
        return self.lm.merge_and_unload(adapter_names=[domain])

    def set_trainable(self, what: str) -> None:
        """``"adapters"`` (all), a domain name (that adapter only), ``"mixer"`` or ``"none"``; the backbone never."""
        for name, param in self.lm.named_parameters():
            adapter = next((d for d in self.domains if f".{d}." in name), None) if "lora_" in name else None
            param.requires_grad_(adapter is not None and what in ("adapters", adapter))
        self.mixer.requires_grad_(what == "mixer")

    # ------------------------------------------------------------------ forwarding

    def forward(self, input_ids=None, attention_mask=None, labels=None, domain_labels=None, neutral=None,
                **kwargs):
        """The routed LM; with ``domain_labels`` (B,) the loss is the mixer's calibration loss instead.

        The output carries ``routing_weights`` (B, T, E) for the positions just computed.
        """
        if domain_labels is not None:
            return self.calibration_loss(input_ids, attention_mask, domain_labels, neutral)
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        out["routing_weights"] = self.mixing.weights
        return out

    def routing(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token routing weights (B, T, E) for a text, from one forward of the bare backbone up to the mixer."""
        hidden = self.router_hidden_states(input_ids, attention_mask)
        return self.mixer(hidden)

    def router_hidden_states(self, input_ids, attention_mask=None) -> torch.Tensor:
        """The residual stream entering ``router_layer`` (B, T, d); later layers are not run."""
        captured = {}

        def grab(module, args, kwargs):
            captured["hidden"] = args[0] if args else kwargs["hidden_states"]
            raise _StopForward

        handle = self.arch.layers[self.config.router_layer].layer.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with torch.no_grad(), self.lm.disable_adapter():
                self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
        return captured["hidden"].detach()

    def calibration_loss(self, input_ids, attention_mask, domain_labels, neutral=None) -> CausalLMOutputWithPast:
        """Class-balanced cross-entropy of every token's routing toward its text's domain, plus, on texts
        flagged ``neutral``, the mean KL divergence of each token's routing from uniform (no adapter favored)."""
        hidden = self.router_hidden_states(input_ids, attention_mask)
        logits = self.mixer.logits(hidden) / self.mixer.temperature  # (B, T, E)
        mask = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        neutral = neutral.bool() if neutral is not None else torch.zeros_like(domain_labels, dtype=torch.bool)
        labels = domain_labels[:, None].expand_as(input_ids)  # (B, T)
        token_mask = mask & ~neutral[:, None]
        loss = logits.new_zeros(())
        present = [e for e in range(len(self.domains)) if (token_mask & (labels == e)).any()]
        for e in present:  # each domain counts the same, however many tokens it has in the batch
            m = token_mask & (labels == e)
            loss = loss + F.cross_entropy(logits[m], labels[m]) / len(present)
        if neutral.any():
            log_probs = logits.log_softmax(-1)[mask & neutral[:, None]]  # (N, E)
            uniform = torch.full_like(log_probs, 1.0 / len(self.domains))
            loss = loss + F.kl_div(log_probs, uniform, reduction="batchmean")  # KL(uniform ‖ p), per token
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    @torch.no_grad()
    def generate(self, *args, return_routing: bool = False, **kwargs):
        """The backbone's ``generate`` with per-token routing; ``return_routing=True`` also returns the
        weights of every position processed, (B, T_prompt + T_new - 1, E), in order."""
        with self.generation_context(kwargs):
            if not return_routing:
                return self.lm.generate(*args, **kwargs)
            trace = []
            handle = self.arch.layers[self.config.router_layer].layer.register_forward_hook(
                lambda *a: trace.append(self.mixing.weights.detach()))
            try:
                sequences = self.lm.generate(*args, **kwargs)
            finally:
                handle.remove()
            return sequences, torch.cat(trace, dim=1)

    # ------------------------------------------------------------------ saving

    def save_pretrained(self, save_directory: str | os.PathLike, save_base: bool | None = None,
                        is_main_process: bool = True, state_dict=None, push_to_hub: bool = False, **kwargs) -> None:
        """Write config.json, adapters/ (peft, one folder per domain), mixer.safetensors, model.safetensors
        (adapters + mixer, for Trainer's resume) and a model card; backbone.safetensors too when
        ``save_base`` (default: the config's ``base_included``)."""
        # the whole state: Trainer's (gathered by Trainer when sharded, then passed to the main process only), else
        # gathered here on every rank (a collective when sharded); the main process writes
        own = state_dict if state_dict is not None else self.full_state_dict()
        if not is_main_process:
            return
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        save_base = self.config.base_included if save_base is None else save_base
        self.config.base_included = bool(save_base)
        self.config.save_pretrained(out)
        lm_state = {k[len("lm."):]: v for k, v in own.items() if k.startswith("lm.")}  # the peft model's keys
        self.lm.save_pretrained(out / ADAPTER_DIR, state_dict=lm_state)
        persist.save_tensors(out / MIXER_WEIGHTS, {k[len("mixer."):]: v for k, v in own.items()
                                                   if k.startswith("mixer.")})
        trainable = {k: v for k, v in own.items() if "lora_" in k or k.startswith("mixer.")}
        persist.save_tensors(out / TRAINABLE_WEIGHTS, trainable, metadata={"format": "pt"})
        if save_base:
            prefix = next(n for n, m in self.named_modules() if m is unwrap_model(self.lm)) + "."
            weights = {k[len(prefix):].replace(".base_layer.", "."): v for k, v in own.items()
                       if k.startswith(prefix) and "lora_" not in k}
            persist.save_tensors(out / BASE_WEIGHTS, persist.dedupe_shared(weights), metadata={"format": "pt"})
        persist.atomic_write_bytes(out / "README.md", str(self.model_card()).encode("utf-8"))

    def model_card(self):
        """This model's ``huggingface_hub.ModelCard`` (written as README.md by ``save_pretrained``)."""
        cfg = self.config
        return model_card(
            "hfself temporal LoRA", cfg.base_model_name_or_path, ["temporal-lora", "lora"],
            [f"- base weights included: {bool(cfg.base_included)}",
             f"- domains (router order): {', '.join(f'`{d}`' for d in cfg.domains)}",
             f"- LoRA: r={cfg.lora_r}, alpha={cfg.lora_alpha}, on layers {cfg.router_layer}+; the mixer reads the "
             f"residual stream entering layer {cfg.router_layer}"],
            "A frozen backbone with one LoRA adapter per domain and a time mixer that routes every token "
            "([hfself](https://github.com/hfself/hfself)).",
            'from hfself import TemporalLoraForCausalLM\n'
            'model = TemporalLoraForCausalLM.from_pretrained("<this repo or directory>")')

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, base_model: nn.Module | None = None,
                        config: TemporalLoraConfig | None = None, **kwargs) -> "TemporalLoraForCausalLM":
        """Load from a directory or Hub id, onto ``base_model`` or the backbone the config names."""
        path = persist.resolve_dir(pretrained_model_name_or_path, kwargs.get("revision"), kwargs.get("token"))
        config = config if isinstance(config, TemporalLoraConfig) else TemporalLoraConfig.from_pretrained(path)
        options = cls.lm_load_options(kwargs, config)
        if base_model is None:
            base_model = load_backbone(path, config, **options)
        model = cls(config, base_model)
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        for name in config.domains:
            folder = path / ADAPTER_DIR if name == "default" else path / ADAPTER_DIR / name  # peft's layout
            result = set_peft_model_state_dict(model.lm, load_peft_weights(str(folder), device="cpu"),
                                               adapter_name=name)
            if result.unexpected_keys:
                raise persist.StateFileError(f"{folder}: unexpected adapter keys {result.unexpected_keys[:5]}")
        expected = {k: tuple(v.shape) for k, v in model.mixer.state_dict().items()}
        model.mixer.load_state_dict(persist.load_tensors(path / MIXER_WEIGHTS, expected=expected))
        model.mixer.to(next(base_model.parameters()).device)
        return model.place(options.get("dtype"), options.get("device_map")).eval()


def load_backbone(path: Path, config: TemporalLoraConfig, attn_implementation: str | None = None,
                  **load_options) -> nn.Module:
    """The plain backbone of a saved model: its own weights when included, else the model it names
    (``load_options``: dtype, device_map)."""
    if config.base_included:
        attn = {"attn_implementation": attn_implementation} if attn_implementation else {}
        base_model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config.base_config), **attn)
        weights = persist.load_tensors(path / BASE_WEIGHTS)
        missing, unexpected = base_model.load_state_dict(weights, strict=False)
        missing = [k for k in missing if "lm_head" not in k and "embed_out" not in k]
        if missing or unexpected:
            raise persist.StateFileError(f"{path / BASE_WEIGHTS}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        base_model.tie_weights()
        return base_model
    if config.base_model_name_or_path:
        from hfself.train import load_causal_lm, require_weights

        require_weights(config.base_model_name_or_path, f"model {path}")
        return load_causal_lm(config.base_model_name_or_path, attn_implementation=attn_implementation,
                              **load_options)[0]
    raise ValueError(f"{path}: the config names no backbone; pass base_model=...")


def _default_targets(base_model: nn.Module, arch) -> list[str]:
    """The Q/K projections hfself.arch found in the attention layers, by their path inside the decoder layer
    (``self_attn.q_proj``: peft matches the suffix, so a projection of the same name in the MLP is left alone)."""
    names = set()
    for info in arch.attention_layers:
        path_of = {id(m): n for n, m in info.layer.named_modules()}
        names |= {path_of[id(t.module)] for t in info.targets if id(t.module) in path_of}
    return sorted(names)


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the router's input is captured."""
