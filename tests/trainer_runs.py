"""What the tests of ``python -m fsc_losses.train`` share: a workspace of tiny data and a tiny
model, in-process runs of the trainer, and a recorder of what modules saw and returned."""

import io
import re
import tarfile
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.nn.modules.module import register_module_forward_hook

from .example_data import CAPTIONS, write_pairs_csv
from .open_clip_models import register_tiny_config, save_local_dir

# The loss and negative flags of the released FSC-CLIP commands (COCO, ViT-B/32), verbatim.
PAPER_FLAGS = [
    "--add-random-text-hard-negatives=fsc-clip",
    "--loss-name=fsc-clip",
    "--neg-loss-name=focal_loss",
    "--focal-gamma",
    "2.0",
    "--neg-label-smoothing",
    "0.02",
    "--apply-global-neg-loss",
    "--neg-loss-weight",
    "0.5",
    "--return-dense-tokens",
    "--apply-local-neg-loss",
    "--local-neg-weight",
    "0.2",
]


class Workspace:
    """A folder with the tiny model (``local-dir`` and registered by name), ``pairs.csv`` (8 images
    and captions, paths relative to the folder: run with it as the working directory), a
    webdataset shard of the same pairs and a two-class ImageFolder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.model_dir = save_local_dir(self.folder / "model")
        self.model_name = register_tiny_config(self.folder)
        self.csv = write_pairs_csv(self.folder)
        self.shard = self._write_shard()
        self.imagenet = self._write_image_folder()
        self.logs = self.folder / "logs"

    def _write_shard(self) -> Path:
        shard = self.folder / "shard-000000.tar"
        with tarfile.open(shard, "w") as tar:
            for i, caption in enumerate(CAPTIONS):
                for suffix, data in (
                    (".png", (self.folder / f"{i}.png").read_bytes()),
                    (".txt", caption.encode()),
                ):
                    info = tarfile.TarInfo(f"{i:06d}{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return shard

    def _write_image_folder(self) -> Path:
        root = self.folder / "imagenet"
        for label in range(2):
            (root / f"class{label}").mkdir(parents=True)
            for i in range(2):
                (root / f"class{label}" / f"{i}.png").write_bytes(
                    (self.folder / f"{2 * label + i}.png").read_bytes()
                )
        return root

    def csv_argv(self, csv: Path | None = None) -> list[str]:
        return [
            f"--train-data={csv or self.csv}",
            "--dataset-type=csv",
            "--csv-separator=,",
            "--csv-img-key=image_path",
            "--csv-caption-key=caption",
        ]

    def base_argv(self, name: str) -> list[str]:
        """open_clip flags of a short, deterministic CPU run named ``name`` (no data flags)."""
        return [
            f"--model={self.model_dir}",
            "--device=cpu",
            "--workers=0",
            "--batch-size=4",
            "--epochs=1",
            "--lr=1e-3",
            "--warmup=1",
            "--precision=fp32",
            "--seed=0",
            "--log-every-n-steps=1",
            f"--logs={self.logs}",
            f"--name={name}",
        ]

    def run_dir(self, name: str) -> Path:
        return self.logs / name


def train(space: Workspace, name: str, *flags: str, data: list[str] | None = None):
    """``fsc_losses.train.main`` in this process, on ``pairs.csv`` unless ``data`` says otherwise."""
    from fsc_losses.train import main

    argv = space.base_argv(name) + (space.csv_argv() if data is None else data) + list(flags)
    return main(argv)


def train_lines(run_dir: Path) -> list[str]:
    """The ``Train Epoch`` lines of a run's ``out.log``."""
    return [line for line in (run_dir / "out.log").read_text().splitlines() if "Train Epoch:" in line]


def logged_terms(line: str) -> dict[str, float]:
    """``{name: value}`` of the loss terms on one ``Train Epoch`` log line (the step's values)."""
    return {name: float(value) for name, value in re.findall(r"(\w+_loss|Loss): (\S+) \(", line)}


def checkpoint(run_dir: Path, epoch: int = 1) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / f"epoch_{epoch}.pt", weights_only=True)["state_dict"]


def _detached(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(v) for v in value)
    return value


@contextmanager
def recording(module_type: type):
    """Record ``(module, inputs, output)`` of every forward of a ``module_type`` module in the block
    (tensors detached and copied)."""
    calls = []

    def hook(module, inputs, output):
        if isinstance(module, module_type):
            calls.append((module, _detached(inputs), _detached(output)))

    handle = register_module_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()
