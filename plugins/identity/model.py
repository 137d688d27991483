"""IdentityForCausalLM: any causal LM, conditioned on a persistent identity."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from hfself import persist
from hfself.arch import (_HOW_TO_REGISTER, LayoutError, inspect_model, is_peft_model, refused_on_failure,
                         unwrap_model)
from hfself.plugins import registry
from hfself.sharding import gathered
from hfself.wrapper import LMWrapper, model_card, write_loader_module

from .block import IdentityBlock
from .config import IdentityConfig
from .layer import (IdentityInjector, check_base_is_causal, fold_into_plain_model, verify_effect,
                    without_projections)

IDENTITY_WEIGHTS = "identity.safetensors"
FULL_WEIGHTS = "model.safetensors"
STATE_FILE = "identity_state.json"
ADAPTER_DIR = "adapter"
_UNSET = object()


class PersonaMismatchError(ValueError):
    pass


def identity_block_class(name: str):
    """The block class registered as ``name`` (only the built-in MLP block when the identity plugin is not loaded
    by the plugin manager, e.g. ``HFSELF_LOAD_PLUGINS`` leaves it out)."""
    blocks = registry("identity_blocks", default={"mlp": IdentityBlock})
    if name not in blocks:
        raise ValueError(f"unknown identity block {name!r}; registered: {sorted(blocks)}")
    return blocks[name]


class IdentityForCausalLM(LMWrapper):
    """A causal LM whose attention reads every token through a learned identity.

    Build from any causal LM (plain or with a peft LoRA)::

        model = IdentityForCausalLM.from_base(base_model, IdentityConfig(identity_dim=64))
        model.save_pretrained("persona")                    # config + identity weights + model card
        model = IdentityForCausalLM.from_pretrained("persona", base_model=base_model)

    ``forward`` and ``generate`` are the base model's; the identity enters
    through hooks on the Q/K projections (see :mod:`.layer`). Unknown attributes
    are forwarded to the base model.
    """

    config_class = IdentityConfig
    _supports_flex_attn = True
    hub_commit_message = "Upload hfself persona"
    hub_save_kwargs = {"save_base": False}  # a pushed persona holds the identity, not the base, unless asked

    def __init__(self, config: IdentityConfig, base_model: nn.Module):
        super().__init__(config)
        self.lm = base_model
        self.arch = None
        self.identity_block = None
        self.injector = None
        self.last_self_description: str | None = None
        if config.enabled:
            lm = unwrap_model(base_model)
            if not config.allow_non_causal_base:
                with gathered(base_model), refused_on_failure(lm, "checking the causality of"):
                    check_base_is_causal(lm)  # (weights ZeRO-3 partitioned at load are whole for this check)
            with refused_on_failure(lm, "measuring the attention of"):
                self.arch = inspect_model(base_model)
            self._build_identity(config)
            with gathered(base_model), refused_on_failure(lm, "verifying the identity on"):
                cached = verify_effect(lm, self.injector, self.arch)
                if cached:  # keys that the KV cache keeps in its value slot: conditioned through the other units
                    self.arch = without_projections(self.arch, cached)
                    self._build_identity(config)
                    if verify_effect(lm, self.injector, self.arch):
                        raise LayoutError(f"{self.arch.model_type!r}: the identity still moves the value slot of "
                                          f"the KV cache without {sorted(cached)}. {_HOW_TO_REGISTER}")
            self.injector.attach()
        self._share_lm_interface()

    def _build_identity(self, config: IdentityConfig) -> None:
        param = next(self.lm.parameters())
        self.identity_block = identity_block_class(config.block)(config, self.arch).to(device=param.device)
        self.injector = IdentityInjector(self.lm, self.identity_block, self.arch)

    # ------------------------------------------------------------------ building

    @classmethod
    def from_base(cls, base_model: nn.Module, config: IdentityConfig | None = None, **kwargs) -> "IdentityForCausalLM":
        """Wrap ``base_model`` (any supported causal LM, plain or peft) with a fresh identity."""
        config = config or IdentityConfig(**kwargs)
        lm = unwrap_model(base_model)
        base_config = lm.config
        config.base_model_name_or_path = config.base_model_name_or_path or base_config.name_or_path or None
        config.base_config = base_config.to_dict()
        return cls(config, base_model)

    def unload(self) -> nn.Module:
        """Remove every identity hook and return the base model."""
        if self.injector is not None:
            self.injector.detach()
        return self.lm

    def merge_and_unload(self) -> nn.Module:
        """The persona as a plain transformers model: the identity folded into the Q/K biases for good, a peft
        LoRA merged. Its ``save_pretrained`` loads with transformers alone, so any engine that serves the base
        architecture serves the persona. This wrapper is spent afterwards."""
        if self.injector is None:
            return self.lm.merge_and_unload() if is_peft_model(self.lm) else self.lm
        with torch.no_grad():
            deltas = [d.detach().clone() for d in self.injector.current_deltas()]
        self.injector.detach()
        lm = self.lm.merge_and_unload() if is_peft_model(self.lm) else self.lm
        return fold_into_plain_model(lm, self.injector.targets, deltas)

    @contextmanager
    def identity_disabled(self):
        """Run the bare base model inside this block (hooks removed, then restored)."""
        attached = self.injector is not None and self.injector.attached
        if attached:
            self.injector.detach()
        try:
            yield self.lm
        finally:
            if attached:
                self.injector.attach()

    # ------------------------------------------------------------------ forwarding

    def forward(self, *args, **kwargs):
        return self.lm(*args, **kwargs)

    @torch.no_grad()
    def generate(self, *args, **kwargs):
        """The base model's ``generate``, with the identity folded into the projection biases (sharded
        projections keep the hooks instead; every rank takes part, see ``generation_context``)."""
        with self.generation_context(kwargs):
            if self.injector is None:
                return self.lm.generate(*args, **kwargs)
            with self.injector.folded():
                return self.lm.generate(*args, **kwargs)

    # ------------------------------------------------------------------ saving

    def identity_state_dict(self, full_state: dict | None = None) -> dict[str, torch.Tensor]:
        if self.identity_block is None:
            return {}
        if full_state is None:
            return dict(self.identity_block.state_dict())
        prefix = "identity_block."
        return {k[len(prefix):]: v for k, v in full_state.items() if k.startswith(prefix)}

    def save_pretrained(self, save_directory: str | os.PathLike, save_base: bool | None = None,
                        state_dict: dict | None = _UNSET, is_main_process: bool = True, push_to_hub: bool = False,
                        **kwargs) -> None:
        """Write the persona: config.json, identity.safetensors, identity_state.json and a model card.

        ``save_base``: also write the base weights to model.safetensors (default: when
        the base itself has trainable, non-LoRA weights). A peft adapter on the base
        goes to ``adapter/``. Called by Trainer (which always passes ``state_dict``),
        the trainable weights go to model.safetensors so ``resume_from_checkpoint`` works.
        """
        # the whole state: Trainer's (it gathers a sharded model itself, then calls this on the main process only),
        # else gathered here on every rank (a collective when sharded); the main process writes
        own = state_dict if state_dict is not _UNSET and state_dict is not None else self.full_state_dict()
        if not is_main_process:
            return
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        from_trainer = state_dict is not _UNSET
        if save_base is None:
            save_base = any(p.requires_grad for n, p in self.lm.named_parameters() if "lora_" not in n)
        if save_base:
            weights, scope = (state_dict if from_trainer and state_dict is not None else own), "full"
        elif from_trainer:
            trainable = {n for n, p in self.named_parameters() if p.requires_grad}
            trainable |= {n for n, _ in self.named_buffers() if n.startswith("identity_block.")}  # block state
            weights, scope = {k: v for k, v in own.items() if k in trainable}, "trainable"
        else:
            weights, scope = None, None
        if weights is not None:
            persist.save_tensors(out / FULL_WEIGHTS, persist.dedupe_shared(weights), metadata={"format": "pt"})
        if self.identity_block is not None:
            persist.save_tensors(out / IDENTITY_WEIGHTS, self.identity_state_dict(own), metadata={"format": "pt"})
        if is_peft_model(self.lm):
            self.lm.save_pretrained(out / ADAPTER_DIR)
        self.config.base_included = bool(save_base)
        self.config.weights_scope = scope
        self.config.architectures = [type(self).__name__]
        self.config.save_pretrained(out)
        persist.save_json(out / STATE_FILE, {"last_self_description": self.last_self_description})
        write_loader_module(out, IdentityConfig, IdentityForCausalLM)
        persist.atomic_write_bytes(out / "README.md", str(self.model_card()).encode("utf-8"))
        if push_to_hub:
            self.push_to_hub(kwargs.get("repo_id") or out.name, token=kwargs.get("token"), save_base=save_base)

    def model_card(self):
        """This persona's ``huggingface_hub.ModelCard`` (written as README.md by ``save_pretrained``)."""
        cfg = self.config
        width = cfg.base_config.get("hidden_size", "?") if cfg.base_config else "?"
        targets = "/".join(name for name, on in (("Q", cfg.inject_q), ("K", cfg.inject_k)) if on)
        said = (self.last_self_description or "(no introspection round has run yet)").strip()
        body = (f"An identity-conditioned persona trained with [hfself](https://github.com/hfself/hfself): a "
                f"persistent identity latent ({cfg.identity_dim}-d) is turned into a {width}-d \"soul\" vector and "
                f"projected into the {targets} projections of {len(cfg.layers) if cfg.layers else 'all'} attention "
                f"layers of the base model.\n\n## Last self-description\n\n> " + said.replace("\n", "\n> "))
        block = f"`{cfg.block}`" + (f" ({json.dumps(cfg.block_config)})" if cfg.block_config else "")
        body += ("\n\n## Loading without hfself\n\nThis folder is an hfself persona: transformers alone cannot build it. "
                 "Install hfself and `import hfself` before loading (or pass `trust_remote_code=True`, which imports "
                 "it through `modeling_hfself.py`), or export it once to a plain transformers model that vLLM, lm-eval "
                 "and every other tool load: `hfself export <this folder> <out>`.")
        return model_card("hfself persona", cfg.base_model_name_or_path, ["identity-conditioned-attention"],
                          [f"- identity block: {block}", f"- base weights included: {bool(cfg.base_included)}"],
                          body, 'from hfself import IdentityForCausalLM\n'
                                'model = IdentityForCausalLM.from_pretrained("<this repo or directory>")')

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args,
                        base_model: nn.Module | None = None, config: IdentityConfig | None = None,
                        **kwargs) -> "IdentityForCausalLM":
        """Load a persona from a directory or Hub id onto ``base_model`` (or the base its config names)."""
        path = persist.resolve_dir(pretrained_model_name_or_path, kwargs.get("revision"), kwargs.get("token"))
        config = config if isinstance(config, IdentityConfig) else IdentityConfig.from_pretrained(path)
        full_file = path / FULL_WEIGHTS
        options = cls.lm_load_options(kwargs, config)
        if base_model is None:
            if config.base_included:
                if not full_file.exists():
                    raise FileNotFoundError(f"persona {path} was saved with its base weights, but {full_file} is "
                                            "missing; restore it, or pass base_model=... with the trained base")
                base_config = AutoConfig.for_model(**config.base_config)
                attn = {k: v for k, v in options.items() if k == "attn_implementation"}
                base_model = AutoModelForCausalLM.from_config(base_config, **attn)
            elif config.base_model_name_or_path:
                from hfself.train import load_causal_lm, require_weights

                require_weights(config.base_model_name_or_path, f"persona {path}")
                base_model, _ = load_causal_lm(config.base_model_name_or_path, **options)
            else:
                raise ValueError(f"{path}: the persona names no base model; pass base_model=...")
        _check_base(config, base_model, path)
        if (path / ADAPTER_DIR).is_dir() and not is_peft_model(base_model):
            from peft import PeftModel

            base_model = PeftModel.from_pretrained(base_model, path / ADAPTER_DIR)
        saved_base_config = config.base_config
        config.name_or_path = str(pretrained_model_name_or_path)  # as transformers records it (TRL reloads from it)
        model = cls.from_base(base_model, config)
        model.config.base_config = saved_base_config or model.config.base_config
        if model.identity_block is not None:
            expected = {k: tuple(v.shape) for k, v in model.identity_state_dict().items()}
            try:
                weights = persist.load_tensors(path / IDENTITY_WEIGHTS, expected=expected)
            except persist.StateFileError as err:
                raise PersonaMismatchError(f"persona {path} does not fit this model/config: {err}") from err
            model.identity_block.load_state_dict(weights)
        scope = getattr(config, "weights_scope", None)
        if full_file.exists() and scope in ("full", "trainable"):
            weights = persist.load_tensors(full_file)
            missing, unexpected = model.load_state_dict(weights, strict=False)
            missing = [k for k in missing if not _tied_to_loaded(model, k, weights)] if scope == "full" else []
            if missing or unexpected:
                raise persist.StateFileError(f"{full_file}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        state_file = path / STATE_FILE
        if state_file.exists():
            model.last_self_description = persist.load_json(state_file).get("last_self_description")
        param = next(model.lm.parameters())
        if model.identity_block is not None:
            model.identity_block.to(param.device)
        return model.place(options.get("dtype"), options.get("device_map")).eval()  # as transformers' from_pretrained


def _check_base(config: IdentityConfig, base_model: nn.Module, where) -> None:
    if not config.base_config:
        return
    lm_config = unwrap_model(base_model).config.to_dict()  # as saved (per-layer values included)
    saved = config.base_config
    for key in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads"):
        want, got = saved.get(key), lm_config.get(key)
        if want is not None and got is not None and want != got:
            raise PersonaMismatchError(
                f"persona {where} was trained on base {config.base_model_name_or_path!r} "
                f"({key}={want}); the base model given has {key}={got}"
            )


def _tied_to_loaded(model: nn.Module, key: str, loaded: dict) -> bool:
    """True when ``key`` names a tensor that is shared with (tied to) a loaded one, e.g. lm_head -> embeddings."""
    names: dict[int, set[str]] = {}
    for name, tensor in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        names.setdefault(id(tensor), set()).add(name)
    return any(key in group and group & loaded.keys() for group in names.values())


def export_persona(persona_path: str | os.PathLike, out: str | os.PathLike, base_model: str | None = None) -> dict:
    """Write a persona as a plain transformers model (identity folded into the Q/K biases, a LoRA merged), with its
    tokenizer and a model card, loadable by any tool without hfself; returns what was written and the largest
    logit difference between the persona and the export on a probe text."""
    from huggingface_hub import ModelCard
    from transformers import AutoTokenizer

    from hfself.train import load_causal_lm

    base = load_causal_lm(base_model)[0] if base_model else None
    persona = IdentityForCausalLM.from_pretrained(persona_path, base_model=base)
    tokenizer = AutoTokenizer.from_pretrained(persona_path)
    probe = tokenizer("The keeper climbed the stairs and lit the lamp.", return_tensors="pt")["input_ids"]
    probe = probe.to(next(persona.parameters()).device)
    with torch.no_grad():
        expected = persona(input_ids=probe).logits
    card = persona.model_card()
    plain = persona.merge_and_unload()
    with torch.no_grad():
        diff = (plain(input_ids=probe).logits - expected).abs().max().item()
    out = Path(out)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    text = str(card).replace("# hfself persona", "# hfself persona, exported", 1)
    text = text.split("## Loading without hfself")[0].rstrip() + (
        "\n\n## Exported\n\nA plain transformers model: the identity is folded into the attention projections' biases"
        f" (max |Δlogit| against the persona {diff:.2g}). It loads with `AutoModelForCausalLM.from_pretrained` alone, "
        "and serves wherever the base architecture does.\n")
    ModelCard(text).save(str(out / "README.md"))
    return {"written": str(out), "architecture": type(plain).__name__, "max_abs_logit_diff": diff}
