"""``python -m fsc_losses.eval`` end to end on the fixtures of every benchmark: a tiny random
open_clip model through ``--model local-dir:``, a tiny transformers CLIP model through ``--hf``,
each checked against the per-item loop of tests/eval_reference.py; and a tiny SigLIP through the
Python API."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from .eval_fixtures import WORDS, WRITERS, write_all
from .eval_reference import Reference, open_image

NAMES = list(WRITERS)
REPO = Path(__file__).resolve().parents[1]
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The models are tiny: a second thread only adds synchronisation, which costs 10-100x on a
    loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """All fixtures, less one VALSE piece, which the command must report as missing."""
    root = tmp_path_factory.mktemp("benchmarks")
    keys = write_all(root)
    (root / "valse" / "foil-it.json").unlink()
    return root, [k for k in keys if k != "valse::foil-it"]


def run_command(*args, cwd):
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")  # one thread, as one_thread
    return subprocess.run(
        [sys.executable, "-m", "fsc_losses.eval", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def common_args(root, out):
    return [
        "--data-root",
        root,
        "--benchmarks",
        *NAMES,
        "--out",
        out,
        "--device",
        "cpu",
        "--workers",
        "0",
        "--batch-size",
        "8",
    ]


def check_payload(payload, keys, model):
    assert set(payload) >= {"results", "model", "versions", "counts", "missing"}
    assert list(payload["results"]) == keys
    assert all(0.0 <= v <= 1.0 for v in payload["results"].values())
    assert payload["model"] == model
    assert {"fsc_losses", "python", "torch"} <= set(payload["versions"])
    assert payload["missing"] == {"valse": ["valse/foil-it.json"]}
    assert payload["counts"]["winoground"] == 6 and payload["counts"]["aro::VG_Attribute"] == 75


def assert_equal_results(actual, expected):
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, abs=1e-9), key


@pytest.fixture(scope="module")
def open_clip_run(root, tmp_path_factory):
    pytest.importorskip("open_clip")
    from .open_clip_models import save_local_dir

    folder = tmp_path_factory.mktemp("open_clip")
    name = save_local_dir(folder / "model")
    done = run_command(
        "--model", name, *common_args(root[0], folder / "results.json"), "--compare", cwd=folder
    )
    assert done.returncode == 0, done.stderr
    return name, done, json.loads((folder / "results.json").read_text())


def test_open_clip_command_writes_every_key(root, open_clip_run):
    name, done, payload = open_clip_run
    check_payload(payload, root[1], {"open_clip": name, "pretrained": None})
    assert "open_clip_torch" in payload["versions"]
    table = done.stdout
    for key in root[1]:
        assert f"\n{key} " in table
    assert "valse: not found or unreadable, not scored: valse/foil-it.json" in table
    assert payload["skipped"] == {}


def test_compare_prints_the_run_beside_the_published_rows(open_clip_run):
    """``--compare``: the run beside the default rows, over the keys it has (VALSE without the
    foil-it piece the fixture leaves out), and the chart beside ``--out`` (a note without
    matplotlib)."""
    _, done, payload = open_clip_run
    comparison = done.stdout[done.stdout.index("Your results beside published ones") :]
    assert "you1: results.json" in comparison and "C: fsc-clip-ViT-B-32/openai_coco" in comparison
    valse = next(line for line in comparison.splitlines() if line.startswith("valse *"))
    assert valse.split()[2] == "10/11"
    assert f"{100 * payload['results']['sugarcrepe::swap_obj']:.1f}" in comparison
    assert "not compared: 20 sugarcrepe_pp key(s)" in comparison
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no chart: the chart needs matplotlib" in done.stderr
    else:
        assert "results_vs_published.png" in done.stderr


def test_open_clip_command_equals_the_per_item_loop(root, open_clip_run):
    import open_clip

    name, _, payload = open_clip_run
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    tokenizer = open_clip.get_tokenizer(name)
    model.eval()

    @torch.no_grad()
    def image(path, box):
        return F.normalize(model.encode_image(preprocess(open_image(path, box))[None])[0].double(), dim=0)

    @torch.no_grad()
    def text(caption):
        return F.normalize(model.encode_text(tokenizer([caption]))[0].double(), dim=0)

    assert_equal_results(payload["results"], Reference(image, text).results(root[0], NAMES))


def tiny_hf_clip(folder):
    """A random ``CLIPModel`` with a word-level tokenizer over the fixtures' words, saved with
    ``save_pretrained`` as a user's fine-tuned model would be."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from .hf_tokenizers import BOS, EOS, PAD, word_tokenizer

    # CLIP pools at the first end token unless its id is 2 (a legacy rule), hence EOS = 1
    text = dict(
        TOWER, vocab_size=64, max_position_embeddings=16, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=BOS
    )
    config = transformers.CLIPConfig(
        text_config=text, vision_config=dict(TOWER, image_size=32, patch_size=8), projection_dim=16
    )
    torch.manual_seed(0)
    model = transformers.CLIPModel(config)
    image_processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor = transformers.CLIPProcessor(
        image_processor=image_processor, tokenizer=word_tokenizer(WORDS, True, 16)
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def hf_reference(model, processor, padding):
    """The reference loop with the model's own ``get_*_features``, one input at a time."""

    def pooled(output):  # a tensor in transformers 4.x, an output object in 5.x
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    @torch.no_grad()
    def image(path, box):
        pixels = processor.image_processor(images=open_image(path, box), return_tensors="pt")["pixel_values"]
        return F.normalize(pooled(model.get_image_features(pixel_values=pixels))[0].double(), dim=0)

    @torch.no_grad()
    def text(caption):
        max_length = model.config.text_config.max_position_embeddings
        tokens = processor.tokenizer(
            [caption], padding=padding, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return F.normalize(pooled(model.get_text_features(**tokens))[0].double(), dim=0)

    return Reference(image, text)


def test_hf_command_equals_the_per_item_loop(root, tmp_path):
    transformers = pytest.importorskip("transformers")
    folder = tiny_hf_clip(tmp_path / "hf_clip")
    done = run_command("--hf", folder, *common_args(root[0], tmp_path / "results.json"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    payload = json.loads((tmp_path / "results.json").read_text())
    check_payload(payload, root[1], {"hf": str(folder), "class": "CLIPModel"})
    assert "transformers" in payload["versions"]

    model = transformers.AutoModel.from_pretrained(folder).eval()
    processor = transformers.AutoProcessor.from_pretrained(folder)
    assert_equal_results(
        payload["results"], hf_reference(model, processor, padding=True).results(root[0], NAMES)
    )


def test_siglip_through_the_api_pads_captions_to_full_length(root):
    """SigLIP's captions are padded to the text tower's length, as SigLIP was trained; with
    another padding its embeddings, and so the results, differ."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from fsc_losses.eval import evaluate

    from .hf_tokenizers import EOS, word_tokenizer

    text = dict(
        TOWER,
        vocab_size=64,
        max_position_embeddings=16,
        bos_token_id=None,
        eos_token_id=EOS,
        pad_token_id=EOS,
    )
    torch.manual_seed(0)
    model = transformers.SiglipModel(
        transformers.SiglipConfig(text_config=text, vision_config=dict(TOWER, image_size=32, patch_size=8))
    ).train()
    processor = transformers.SiglipProcessor(
        image_processor=transformers.SiglipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=word_tokenizer(WORDS, with_bos=False, max_length=16),
    )
    names = ["sugarcrepe", "winoground", "valse"]
    results = evaluate(model, names, root[0], processor=processor, batch_size=8, progress=False)
    assert model.training
    model.eval()
    assert_equal_results(results, hf_reference(model, processor, "max_length").results(root[0], names))
    assert hf_reference(model, processor, True).results(root[0], names) != results


def test_command_errors(root, tmp_path, capsys):
    pytest.importorskip("open_clip")
    from fsc_losses.eval.__main__ import main

    from .open_clip_models import save_local_dir

    name = save_local_dir(tmp_path / "model")
    shutil.copytree(root[0] / "winoground", tmp_path / "data" / "winoground")
    args = [
        "--model",
        name,
        "--data-root",
        str(tmp_path / "data"),
        "--device",
        "cpu",
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main([*args, "--benchmarks", "aro"]) == 1
    assert (
        "expected layout under the data root:\n  aro/visual_genome_relation.json" in capsys.readouterr().err
    )
    (tmp_path / "data" / "winoground" / "images" / "ex_2_img_1.png").unlink()
    assert main([*args, "--benchmarks", "winoground"]) == 1
    assert "ex_2_img_1.png (item 2 (line 3))" in capsys.readouterr().err
    # an unreadable image, and a folder where an image belongs: one error line each, naming it
    images = tmp_path / "data" / "winoground" / "images"
    shutil.copy(root[0] / "winoground" / "images" / "ex_2_img_1.png", images)
    (images / "ex_3_img_0.png").write_bytes((images / "ex_3_img_0.png").read_bytes()[:40])
    assert main([*args, "--benchmarks", "winoground"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: winoground: cannot read the image {images / 'ex_3_img_0.png'} (item 3 (line 4))"
    )
    assert "1 unreadable image(s) in all" in err and err.count("\n") == 1
    (images / "ex_2_img_1.png").write_bytes(b"")
    (images / "ex_3_img_0.png").unlink()
    (images / "ex_3_img_0.png").mkdir()
    assert main([*args, "--benchmarks", "winoground"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: winoground: cannot read the image {images / 'ex_2_img_1.png'} (item 2 (line 3))"
    )
    assert "2 unreadable image(s) in all" in err and err.count("\n") == 1
    (images / "ex_2_img_1.png").unlink()  # absent now: skipped as well
    assert (
        main([*args, "--benchmarks", "winoground", "--skip-bad-images", "--out", str(tmp_path / "r.json")])
        == 0
    )
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["skipped"] == {"winoground": 2}
    assert payload["missing"] == {
        "winoground": ["winoground/images/ex_2_img_1.png", "winoground/images/ex_3_img_0.png"]
    }
    assert payload["counts"] == {"winoground": 4}
    assert "winoground: 2 item(s) skipped for an absent or unreadable image" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "data" / "winoground")
    shutil.copytree(root[0] / "winoground", tmp_path / "data" / "winoground")
    (tmp_path / "data" / "winoground" / "examples.jsonl").unlink()
    (tmp_path / "data" / "winoground" / "examples.jsonl").mkdir()
    assert main([*args, "--benchmarks", "winoground"]) == 1
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'data' / 'winoground' / 'examples.jsonl'}: a directory where winoground "
        "expects its file examples.jsonl\n"
    )
    assert main([*args, "--benchmarks", "winoground", "--pretrained", "openai"]) == 1
    assert "a local-dir: model takes a checkpoint file, not a pretrained tag" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--hf", str(tmp_path), *args[2:], "--benchmarks", "winoground", "--pretrained", "x.pt"])
    assert "--pretrained goes with --model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--benchmarks", "winoground", "--image-root", "nothing=/x"])
    assert "--image-root takes NAME=DIR" in capsys.readouterr().err


def test_a_local_dir_model_scores_a_checkpoint_given_with_pretrained(root, tmp_path):
    """``--model local-dir:FOLDER --pretrained CKPT`` scores the checkpoint's weights (open_clip
    alone would keep the folder's and only log a warning)."""
    pytest.importorskip("open_clip")
    from safetensors.torch import load_file

    from fsc_losses.eval.__main__ import load_model, parse_args

    from .open_clip_models import save_local_dir

    name = save_local_dir(tmp_path / "model", seed=0)
    save_local_dir(tmp_path / "trained", seed=1)
    trained = load_file(tmp_path / "trained" / "open_clip_model.safetensors")
    # as open_clip_train saves under DDP: the weights under "state_dict", keys prefixed "module."
    checkpoint = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in trained.items()}}, checkpoint)
    args = parse_args(
        ["--model", name, "--pretrained", str(checkpoint), "--data-root", str(root[0]), "--benchmarks", "aro"]
    )
    model, _, described = load_model(args, torch.device("cpu"))
    assert described == {"open_clip": name, "pretrained": str(checkpoint)}
    assert all(torch.equal(model.state_dict()[key], value) for key, value in trained.items())
    assert not torch.equal(
        model.state_dict()["visual.proj"],
        load_file(tmp_path / "model" / "open_clip_model.safetensors")["visual.proj"],
    )
