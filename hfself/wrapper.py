"""LMWrapper: the PreTrainedModel base of hfself models that hold a causal LM in ``.lm``.

It gives them what transformers, peft and TRL reach for on a model: the
backbone as ``base_model``, embeddings, gradient checkpointing, attributes the
wrapper lacks (``generation_config``, ...) looked up on the LM, and
``push_to_hub`` through the subclass's own ``save_pretrained``.
``hfself.arch.unwrap_model`` unwraps it through ``.lm``.
"""

from __future__ import annotations

import tempfile

from torch import nn
from transformers import PreTrainedModel

from hfself.arch import unwrap_model


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
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp,
                                     commit_message=commit_message or self.hub_commit_message)
        return getattr(info, "commit_url", str(info))
