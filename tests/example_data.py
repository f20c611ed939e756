"""What the example trainers' tests train on: eight captions and random images, as a CSV."""

import csv
import importlib.util
from pathlib import Path

import torch

CAPTIONS = [
    "a red cube to the left of a blue sphere",
    "two dogs sitting on a wooden bench",
    "a small cat under a large table",
    "a man riding a bike behind a bus",
    "a green ball in front of a white door",
    "three birds flying above a river",
    "a woman holding a yellow umbrella",
    "a black car next to a tall tree",
]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def write_pairs_csv(folder: Path) -> Path:
    """``folder/pairs.csv`` with an ``image_path,caption`` header, one random PNG per caption, the
    paths relative to the CSV's folder."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    with open(folder / "pairs.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image_path", "caption"])
        for i, caption in enumerate(CAPTIONS):
            pixels = torch.randint(0, 256, (40, 48, 3), generator=gen, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / f"{i}.png")
            writer.writerow([f"{i}.png", caption])
    return folder / "pairs.csv"


def load_example(name: str):
    """``examples/{name}.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
