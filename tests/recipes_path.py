import sys
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def add_recipes_to_path() -> None:
    if str(RECIPES) not in sys.path:
        sys.path.insert(0, str(RECIPES))

# The main recipe's default is the real model; tests run it on the tiny embedded default.
TINY_IDENTITY = ["--config", str(RECIPES / "configs" / "identity_sft_tiny.yaml")]
