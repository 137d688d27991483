"""Run by tests/test_temporal.py under `accelerate launch` with 2 CPU processes.

Runs the temporal recipe, then each rank writes its adapters and mixer to
<output_dir>/rank<k>.safetensors so the test can compare ranks.
"""

import sys
from pathlib import Path

from recipes_path import add_recipes_to_path

add_recipes_to_path()

import temporal_lora  # noqa: E402
from accelerate import PartialState  # noqa: E402

from hfself import persist  # noqa: E402

if __name__ == "__main__":
    model, trainer = temporal_lora.main(sys.argv[1:])
    trained = {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k or k.startswith("mixer.")}
    rank = PartialState().process_index
    persist.save_tensors(Path(trainer.args.output_dir).parent / f"rank{rank}.safetensors", trained)  # stage dir → run dir
