"""LMWrapper: the PreTrainedModel base of hfself models that hold a causal LM in ``.lm``.

It gives them what transformers, peft and TRL reach for on a model: the
backbone as ``base_model``, embeddings, gradient checkpointing, the LM's
forward parameters and generation config (so Trainer's column pruning and
pipelines see the model they expect), attributes the wrapper lacks looked up on
the LM, and ``push_to_hub`` through the subclass's own ``save_pretrained``.
``hfself.arch.unwrap_model`` unwraps it through ``.lm``.
"""

from __future__ import annotations

import inspect
import os
import tempfile
import types
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.distributed.tensor import DTensor
from transformers import PreTrainedModel

from hfself.arch import unwrap_model
from hfself.data import DEFAULT_MODEL_ID, is_default_model
from hfself.sharding import gathered, is_sharded, sharded_generation_kwargs


def base_reference(name_or_path: str | None) -> tuple[str | None, str]:
    """``(Hub id or None, how a card names the base)``: a local directory is named by its folder alone, so a
    pushed card never shows a path from the machine it was saved on."""
    if not name_or_path:
        return None, "unknown"
    if is_default_model(name_or_path):
        return None, f"hfself's embedded default (`{DEFAULT_MODEL_ID}`, a tiny Llama pretrained on Shakespeare and Python)"
    if os.path.isabs(name_or_path) or Path(name_or_path).exists():
        return None, f"a local model ({Path(name_or_path).name})"
    return name_or_path, name_or_path


def model_card(title: str, base: str | None, tags: list[str], details: list[str], body: str, usage: str):
    """A ``huggingface_hub.ModelCard`` for an hfself model: metadata (library, tags, the base's Hub id when it has
    one), a title, bullet ``details``, free ``body`` text and a usage snippet."""
    from huggingface_hub import ModelCard, ModelCardData

    hub_id, named = base_reference(base)
    data = ModelCardData(library_name="hfself", tags=["hfself", *tags], base_model=hub_id)
    lines = [f"- base model: {f'[{hub_id}](https://huggingface.co/{hub_id})' if hub_id else named}", *details]
    text = (f"---\n{data.to_yaml()}\n---\n\n# {title}\n\n{body.strip()}\n\n" + "\n".join(lines)
            + f"\n\n## Use\n\n```python\n{usage.strip()}\n```\n")
    return ModelCard(text)


def without_local_paths(config_file: Path) -> None:
    """Name a local base by its folder alone in a config about to be pushed (a Hub id or hfself's default id stays):
    the path means nothing on another machine and tells the world this one's layout."""
    import json
    import logging

    config = json.loads(config_file.read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if base and base_reference(base)[0] is None and not is_default_model(base):
        config["base_model_name_or_path"] = Path(base).name
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        logging.getLogger("hfself").warning(
            "the base %s is a local directory: the pushed config names it %r, so loading the pushed model needs "
            "base_model=... (or push the base and set its Hub id)", base, Path(base).name)


def write_loader_module(directory: Path, config_cls: type, model_cls: type) -> None:
    """``modeling_hfself.py``, which the config's ``auto_map`` (:func:`hfself.auto.auto_map`) names: it imports
    hfself's classes (which registers them), or fails naming hfself and ``hfself export``."""
    from hfself import persist
    from hfself.auto import LOADER_MODULE

    module = config_cls.__module__.rsplit(".", 1)[0]
    text = f'''"""This folder holds an hfself model (https://github.com/hfself/hfself); transformers alone cannot build it.

With hfself installed: ``import hfself`` before loading, or pass ``trust_remote_code=True`` (this file then
imports it). To get a plain transformers model that any tool loads: ``hfself export <this folder> <out>``.
"""

try:
    from {module} import {config_cls.__name__}, {model_cls.__name__}  # noqa: F401
except ImportError as err:
    raise ImportError(
        "this folder is an hfself model ({model_cls.__name__}): install hfself to load it (pip install hfself), "
        "or export it once with hfself to a plain transformers model: hfself export <this folder> <out>"
    ) from err
'''
    persist.atomic_write_bytes(directory / f"{LOADER_MODULE}.py", text.encode("utf-8"))


class LMWrapper(PreTrainedModel):
    base_model_prefix = "lm"
    main_input_name = "input_ids"
    _hfself_wrapper = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    supports_gradient_checkpointing = True
    hub_commit_message = "Upload hfself model"
    hub_save_kwargs: dict = {}  # defaults for save_pretrained when pushing

    @classmethod
    def can_generate(cls) -> bool:
        return True  # generate() is the LM's, run with this wrapper's hooks

    def _share_lm_interface(self) -> None:
        """Call once ``self.lm`` is set: this model's forward lists the LM's parameters too (Trainer keeps the
        dataset columns the LM accepts) and generates with the LM's generation config."""
        lm = unwrap_model(self.lm)
        if getattr(lm, "generation_config", None) is not None:
            self.generation_config = lm.generation_config
        forward = type(self).forward
        own = [p for p in inspect.signature(forward).parameters.values()
               if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        names = {p.name for p in own}
        from_lm = [p.replace(kind=p.KEYWORD_ONLY) for p in inspect.signature(lm.forward).parameters.values()
                   if p.name not in names and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        rest = [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]

        def lm_forward(self, *args, **kwargs):
            return forward(self, *args, **kwargs)

        lm_forward.__doc__ = forward.__doc__
        lm_forward.__signature__ = inspect.Signature(own + from_lm + rest)
        self.forward = types.MethodType(lm_forward, self)

    @contextmanager
    def generation_context(self, kwargs: dict):
        """Where ``generate`` runs (every rank enters). Sharded, each rank keeps stepping until all are done
        (``synced_gpus``, as TRL does); under FSDP2 the root's own parameters (this wrapper's modules, the
        embeddings) are gathered for the call, since its steps never pass through this module's forward."""
        from torch.distributed.fsdp import FSDPModule

        if not is_sharded(self):
            yield
            return
        for key, value in sharded_generation_kwargs(self).items():
            kwargs.setdefault(key, value)
        root = self if isinstance(self, FSDPModule) else None
        if root is not None:
            root.unshard()
        try:
            yield
        finally:
            if root is not None:
                root.reshard()

    def full_state_dict(self) -> dict:
        """The whole state, gathered from every rank when sharded (a collective: every rank calls it)."""
        if not is_sharded(self):
            return self.state_dict()
        if not any(isinstance(p, DTensor) for p in self.parameters()):  # DeepSpeed ZeRO-3
            with gathered(self):
                return {k: v.detach().clone() for k, v in self.state_dict().items()}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self, options=StateDictOptions(full_state_dict=True))

    @staticmethod
    def lm_load_options(kwargs: dict, config=None) -> dict:
        """``dtype``, ``device_map`` and ``attn_implementation`` given to ``from_pretrained`` (AutoModel moves the
        last into the config), for loading the LM."""
        options = {"dtype": kwargs.get("dtype", kwargs.get("torch_dtype")), "device_map": kwargs.get("device_map"),
                   "attn_implementation": kwargs.get("attn_implementation")
                   or getattr(config, "_attn_implementation_internal", None)}
        return {k: v for k, v in options.items() if v is not None}

    def place(self, dtype=None, device_map=None) -> "LMWrapper":
        """Cast the whole model to ``dtype`` and move it to a single-device ``device_map`` ("auto" and per-module
        maps are left to the LM's own loading)."""
        if isinstance(dtype, str) and dtype != "auto":
            dtype = getattr(torch, dtype)
        if isinstance(dtype, torch.dtype):
            self.to(dtype=dtype)
        if isinstance(device_map, int):
            device_map = torch.device("cuda", device_map)
        if device_map is not None and not isinstance(device_map, dict) and device_map != "auto":
            self.to(torch.device(device_map))
        return self

    @property
    def base_model(self) -> nn.Module:
        """The LM's backbone (no LM head), as ``PreTrainedModel.base_model`` means elsewhere."""
        return unwrap_model(self.lm).base_model

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "lm" or "lm" not in self.__dict__.get("_modules", {}):
                raise
            return getattr(self._modules["lm"], name)

    def get_input_embeddings(self):
        return self.lm.get_input_embeddings()

    def get_output_embeddings(self):
        return self.lm.get_output_embeddings()

    def gradient_checkpointing_enable(self, *args, **kwargs):
        self.lm.gradient_checkpointing_enable(*args, **kwargs)

    def gradient_checkpointing_disable(self):
        self.lm.gradient_checkpointing_disable()

    def activation_checkpointing_enable(self, *args, **kwargs):
        self.lm.activation_checkpointing_enable(*args, **kwargs)

    def _init_weights(self, module):  # the LM is initialized; the added modules initialize themselves
        pass

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, private: bool | None = None,
                    token: str | None = None, **save_kwargs) -> str:
        """Save to a temporary directory (``save_pretrained(**save_kwargs)``) and upload it to ``repo_id``."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, **{**self.hub_save_kwargs, **save_kwargs})
            without_local_paths(Path(tmp) / "config.json")
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp,
                                     commit_message=commit_message or self.hub_commit_message)
        return getattr(info, "commit_url", str(info))
