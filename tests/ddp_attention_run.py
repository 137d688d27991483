"""Run by tests/test_optim.py under `accelerate launch` with 2 CPU processes.

Runs the attention recipe, then each rank writes its model weights and its dream
buffer to <output_dir>/rank<k>.safetensors so the test can compare ranks.
"""

import sys
from pathlib import Path

from recipes_path import add_recipes_to_path

add_recipes_to_path()

import attention_sft  # noqa: E402
import torch  # noqa: E402
from accelerate import PartialState  # noqa: E402

from hfself import persist  # noqa: E402

if __name__ == "__main__":
    trainer = attention_sft.main(sys.argv[1:])
    model = trainer.accelerator.unwrap_model(trainer.model)
    tensors = {k: v.detach().clone() for k, v in model.named_parameters()}  # tied weights once
    dreams = next(c for c in trainer.callback_handler.callbacks if type(c).__name__ == "DreamCallback")
    tensors["dream_buffer"] = torch.tensor([t for item in dreams.buffer.items for t in item["input_ids"]])
    rank = PartialState().process_index
    persist.save_tensors(Path(trainer.args.output_dir) / f"rank{rank}.safetensors", tensors)
