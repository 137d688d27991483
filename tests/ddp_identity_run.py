"""Run by tests/test_introspection.py under `accelerate launch` with 2 CPU processes.

Trains a few steps with introspection, then each rank writes its identity block to
<output_dir>/rank<k>.safetensors so the test can compare ranks.
"""

import sys
from pathlib import Path

from recipes_path import add_recipes_to_path

add_recipes_to_path()

import identity_sft  # noqa: E402
from accelerate import PartialState  # noqa: E402

from hfself import persist  # noqa: E402

if __name__ == "__main__":
    trainer = identity_sft.main(sys.argv[1:])
    state = PartialState()
    block = trainer.accelerator.unwrap_model(trainer.model).identity_block
    persist.save_tensors(Path(trainer.args.output_dir) / f"rank{state.process_index}.safetensors", block.state_dict())
