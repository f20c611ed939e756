import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "fsc_losses" / "__init__.py").read_text(), re.M)[1]

# num2words: SmolVLM's processor needs it (transformers imports it there); the LVLM architecture
# tests build that processor.
TEST = ["pytest>=7", "num2words>=0.5"]
# tqdm: the demo's progress bar (open_clip needs it too).
OPEN_CLIP = ["open_clip_torch>=3.3", "tqdm>=4.60"]
# transformers: the CLIP/SigLIP integration (from 4.49) and the LVLM glue (5.x only;
# integrations.lvlm.hidden_states says so on 4.x); peft: LoRA for the LVLM losses;
# accelerate: transformers' Trainer needs it, and integrations.hf_trainer uses its Accelerator
# (autocast, gather, unwrap_model). The versions tested: docs/tested-versions.md.
TRANSFORMERS = ["transformers>=4.49", "peft>=0.21", "accelerate>=1.1"]
# python -m fsc_losses.train: open_clip's trainer ships in the open_clip_torch wheel, its [training]
# extra brings the data pipeline (webdataset, pandas, ...); the versions it supports are those of
# fsc_losses.train.SUPPORTED_OPEN_CLIP. peft: --lora-rank (its target_parameters, 0.21).
# tensorboard: the released FSC-CLIP commands pass --report-to tensorboard (tested with 2.21).
TRAIN = ["open_clip_torch[training]>=3.3,<3.4", "peft>=0.21", "tqdm>=4.60", "tensorboard>=2.10"]

setup(
    name="fsc_losses",
    version=VERSION,
    description="FSC-CLIP losses (local hard-negative loss, Selective Calibrated Regularization) "
    "for CLIP fine-tuning, with fused Triton kernels",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    packages=find_packages(include=["fsc_losses", "fsc_losses.*"]),
    # the FSC-CLIP authors' published result tables, read by fsc_losses.eval.published
    package_data={"fsc_losses.eval": ["published/*.csv", "published/README.md"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "einops>=0.7",
        "triton>=3.0; platform_system == 'Linux'",
    ],
    extras_require={
        "test": TEST,
        "open_clip": OPEN_CLIP,
        "transformers": TRANSFORMERS,
        "train": TRAIN,
        "dev": TEST + OPEN_CLIP + TRANSFORMERS + TRAIN + ["ruff", "matplotlib"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
