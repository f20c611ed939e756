"""``fsc_losses.train``'s refusals and its parts, without a training run: the flags and their
combinations, the installed open_clip's version, the hard-negative captions, the loss's mapping,
WiSE-FT, the compositional validation's logging and the two open_clip_train fixes."""

import argparse
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("open_clip_train.main")

from open_clip.tokenizer import SimpleTokenizer  # noqa: E402
from open_clip_train.data import SharedEpoch  # noqa: E402
from open_clip_train.params import parse_args as open_clip_parse_args  # noqa: E402

from fsc_losses.train import UsageError, main, wise_ft  # noqa: E402
from fsc_losses.train import flags as train_flags  # noqa: E402
from fsc_losses.train.captions import MISSING_TOKEN, NegativeCaptions, read_negatives_column  # noqa: E402
from fsc_losses.train.loss import TrainerLoss, fsc_loss_kwargs, reported_terms  # noqa: E402
from fsc_losses.train.models import dense_token_ids, enable_grouped_captions  # noqa: E402
from fsc_losses.train.trainer import _DDPWithoutCPUDeviceIds, _topk_hits  # noqa: E402
from fsc_losses.train.validation import compositional_validation, is_due  # noqa: E402

from .example_data import CAPTIONS  # noqa: E402
from .open_clip_models import TINY_CONFIG  # noqa: E402
from .trainer_runs import PAPER_FLAGS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--train-data=pairs.csv", "--device=cpu"]
STYLE = "--add-random-text-hard-negatives=fsc-clip"
GLOBAL = ["--apply-global-neg-loss", STYLE]
WDS = ["--train-data=x.tar", "--dataset-type=webdataset"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            TRAIN + PAPER_FLAGS + ["--distill-model=ViT-B-32", "--distill-pretrained=openai"],
            r"distillation \(--distill-model / --distill-pretrained\) is not supported",
        ),
        (
            TRAIN + PAPER_FLAGS + ["--model=coca_ViT-B-32"],
            r"CoCa models are not supported \(--model coca_ViT",
        ),
        (TRAIN + ["--apply-local-neg-loss", STYLE], "--apply-local-neg-loss .* needs --return-dense-tokens"),
        (TRAIN + GLOBAL + ["--return-dense-tokens"], "--return-dense-tokens without --apply-local-neg-loss"),
        (TRAIN + [STYLE], "fsc-clip .* needs a hard-negative term"),
        (TRAIN + ["--apply-global-neg-loss"], "the hard-negative terms need negatives"),
        (TRAIN + ["--loss-name=clip", STYLE], "--loss-name clip .*NegCLIP"),
        (TRAIN + ["--apply-global-neg-loss", "--add-random-text-hard-negatives=colour"], "expected one of"),
        (TRAIN + ["--apply-global-neg-loss", "--add-random-text-hard-negatives=swap,swap"], "distinct kinds"),
        (TRAIN + ["--apply-global-neg-loss", "--add-random-text-hard-negatives=svlc"], "SVLC"),
        (
            WDS + ["--apply-global-neg-loss", "--add-random-text-hard-negatives=csv_negclip"],
            "csv_negclip reads the column neg_caption of a CSV/TSV",
        ),
        (TRAIN + GLOBAL + ["--force-context-length=1"], "--force-context-length must hold"),
        (TRAIN + GLOBAL + ["--comp-data-root=/tmp"], "--comp-data-root without --comp-validation-datasets"),
        (
            TRAIN + GLOBAL + ["--comp-batch-size=8", "--comp-data-root=/tmp"],
            "--comp-data-root and --comp-batch-size without --comp-validation-datasets .* sugarcrepe",
        ),
        (TRAIN + ["--apply-global-neg-loss", "--add-random-text-hard-negatives=ngram_shuffle_3"], "pairs"),
        (
            TRAIN + PAPER_FLAGS + ["--sim-sparsify", "--sim-normalizer=softmax"],
            "needs --sim-normalizer minmax",
        ),
        (TRAIN + GLOBAL + ["--neg-label-smoothing=1"], r"--neg-label-smoothing must be in \[0, 1\)"),
        (TRAIN + GLOBAL + ["--focal-gamma=-1"], "--focal-gamma must be >= 0"),
        (
            WDS + ["--apply-global-neg-loss", "--hard-negatives-key=neg"],
            "--hard-negatives-key neg reads the column neg of a CSV",
        ),
        (
            WDS + GLOBAL + ["--caption-key=coca_captions"],
            "--caption-key coca_captions: open_clip's webdataset pipeline reads each sample's .txt",
        ),
        (TRAIN + GLOBAL + ["--caption-key=title"], "--caption-key title: for a CSV, .* --csv-caption-key"),
        (TRAIN + GLOBAL + ["--lora-rank=4", "--resume=epoch_1.pt"], "--resume with --lora-rank"),
        (["--val-data=pairs.csv", "--lora-rank=4"], "--lora-rank trains LoRA adapters"),
        (TRAIN + GLOBAL + ["--wise-ft-alpha=0.5"], "--wise-ft-alpha evaluates interpolated weights"),
        (["--val-data=pairs.csv", "--wise-ft-alpha=1.5"], r"--wise-ft-alpha must be in \(0, 1\)"),
        (TRAIN + GLOBAL + ["--horovod"], "--horovod"),
        (TRAIN + GLOBAL + ["--torchscript"], "--torchscript"),
        (TRAIN + GLOBAL + ["--siglip", "--loss-dist-impl=bidir"], "--loss-dist-impl bidir"),
    ],
)
def test_refused_command_lines(argv, message):
    with pytest.raises(UsageError, match=message):
        main(argv)


def test_comp_validation_refusals(monkeypatch, tmp_path):
    comp = ["--comp-validation-datasets", "sugarcrepe", f"--comp-data-root={tmp_path}"]
    monkeypatch.setitem(sys.modules, "fsc_losses.eval", None)  # an import of it fails
    with pytest.raises(UsageError, match="--comp-validation-datasets needs fsc_losses.eval"):
        main(TRAIN + GLOBAL + ["--val-data=pairs.csv"] + comp)
    monkeypatch.delitem(sys.modules, "fsc_losses.eval")  # the real one from here on
    with pytest.raises(UsageError, match="runs at the end of open_clip's validation"):
        main(TRAIN + GLOBAL + comp)
    with pytest.raises(UsageError, match="--comp-data-root .*missing is not a directory"):
        main(TRAIN + GLOBAL + ["--val-data=pairs.csv", *comp[:2], f"--comp-data-root={tmp_path / 'missing'}"])
    with pytest.raises(UsageError, match="unknown benchmark sugar_crepe, aros; known: sugarcrepe, aro, "):
        main(TRAIN + GLOBAL + ["--val-data=pairs.csv", "--comp-validation-datasets", "sugar_crepe", "aros"])


@pytest.mark.parametrize("logger, module", [("tensorboard", "torch.utils.tensorboard"), ("wandb", "wandb")])
def test_a_missing_logger_is_named_at_start(monkeypatch, logger, module):
    # open_clip asserts it only after building the model; the fork's commands pass tensorboard
    monkeypatch.setitem(sys.modules, module, None)  # an import of it fails
    for report_to in (logger, "all"):
        with pytest.raises(
            UsageError, match=rf"--report-to {report_to} needs {logger}.*pip install {logger}"
        ):
            main(TRAIN + PAPER_FLAGS + [f"--report-to={report_to}"])


def test_checkpoints_are_deleted_as_the_fork_does():
    assert _args(*GLOBAL).delete_previous_checkpoint is True  # open_clip's default is False
    assert _args(*GLOBAL, "--delete-previous-checkpoint").delete_previous_checkpoint is True
    assert _args(*GLOBAL, "--no-delete-previous-checkpoint").delete_previous_checkpoint is False


def test_comp_flags_take_their_defaults_with_the_datasets(tmp_path):
    args = _args(
        *GLOBAL, "--val-data=pairs.csv", "--comp-validation-datasets", "aro", f"--comp-data-root={tmp_path}"
    )
    assert (args.comp_data_root, args.comp_batch_size) == (str(tmp_path), 64)
    assert _args(*GLOBAL).comp_validation_datasets is None  # off, as before


def test_comp_data_root_expands_the_home_folder(monkeypatch, tmp_path):
    (tmp_path / "datasets").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    args = train_flags.parse_args(
        TRAIN + GLOBAL + ["--val-data=pairs.csv", "--comp-validation-datasets", "aro"], open_clip_parse_args
    )
    assert args.comp_data_root == str(tmp_path / "datasets")  # the default, ~/datasets


@pytest.mark.parametrize("version", ["3.4.0", "2.24.0", "4.0.0.dev1"])
def test_unsupported_open_clip_versions_are_refused(monkeypatch, version):
    monkeypatch.setattr(open_clip, "__version__", version)
    with pytest.raises(UsageError, match=rf"open_clip_torch >=3.3,<3.4; the installed one is {version}"):
        main(TRAIN + PAPER_FLAGS)


def test_a_trainer_of_another_shape_is_refused(monkeypatch):
    trainer = types.ModuleType("open_clip_train.main")
    for name in ("main", "parse_args", "create_model_and_transforms", "get_data", "evaluate"):
        setattr(trainer, name, lambda *a, **k: None)
    monkeypatch.setitem(sys.modules, "open_clip_train.main", trainer)  # a trainer without create_loss
    with pytest.raises(
        UsageError, match=rf"open_clip_torch {open_clip.__version__}: open_clip_train.main has no create_loss"
    ):
        main(TRAIN + PAPER_FLAGS)
    # A missing dependency of the trainer (the train extra not installed).
    monkeypatch.setitem(sys.modules, "open_clip_train.data", None)
    monkeypatch.delitem(sys.modules, "open_clip_train.main")
    with pytest.raises(
        UsageError,
        match=rf"{open_clip.__version__}: open_clip_train.main does not import .*data.*\[train\]",
    ):
        main(TRAIN + PAPER_FLAGS)


def test_the_command_prints_refusals_without_a_traceback():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = ["--", *TRAIN, *PAPER_FLAGS, "--distill-model=ViT-B-32"]  # the leading -- torchrun needs
    done = subprocess.run(
        [sys.executable, "-m", "fsc_losses.train", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 1
    assert "fsc_losses.train: error: distillation (--distill-model) is not supported" in done.stderr
    assert "Traceback" not in done.stderr


def _args(*argv: str) -> argparse.Namespace:
    args = train_flags.parse_args([*TRAIN, *argv], open_clip_parse_args)
    args.rank, args.world_size = 0, 1  # set by open_clip's init_distributed_device
    return args


def test_absent_flags_take_the_forks_defaults():
    kwargs = fsc_loss_kwargs(
        _args("--apply-global-neg-loss", "--apply-local-neg-loss", "--return-dense-tokens", STYLE)
    )
    assert kwargs == {
        "global_weight": 1.0,
        "local_weight": 1.0,
        "normalizer": "minmax",
        "sparsify": False,
        "focal_gamma": 0.0,  # cross_entropy: the fork's --focal-gamma 1.0 applies to focal_loss only
        "label_smoothing": None,
        "contrastive": "softmax",
        "local_loss": False,
        "gather_with_grad": False,
        "rank": 0,
        "world_size": 1,
    }
    assert fsc_loss_kwargs(_args(*GLOBAL, "--neg-loss-name=focal_loss"))["focal_gamma"] == 1.0
    assert reported_terms(_args(*GLOBAL)) == ("contrastive_loss", "global_hn_loss")


def test_the_papers_flags_map_onto_fscloss():
    args = _args(*PAPER_FLAGS, "--sim-sparsify", "--local-loss", "--gather-with-grad")
    kwargs = fsc_loss_kwargs(args)
    assert (kwargs["global_weight"], kwargs["local_weight"]) == (0.5, 0.2)
    assert (kwargs["focal_gamma"], kwargs["label_smoothing"], kwargs["sparsify"]) == (2.0, 0.02, True)
    assert kwargs["local_loss"] and kwargs["gather_with_grad"]
    assert reported_terms(args) == ("contrastive_loss", "global_hn_loss", "local_hn_loss")
    siglip = fsc_loss_kwargs(_args(*PAPER_FLAGS, "--siglip"))
    assert siglip["contrastive"] == "sigmoid" and siglip["gather_with_grad"]  # as open_clip's SigLipLoss


def test_the_trainer_loss_keeps_the_enabled_terms_only():
    # The local term alone: FSCLoss also computes its global term (weight 0), which is dropped.
    loss = TrainerLoss.from_args(_args("--apply-local-neg-loss", "--return-dense-tokens", STYLE))
    gen = torch.Generator().manual_seed(0)
    batch, groups, length, patches, width = 2, 3, 5, 4, 8
    out = loss(
        image_features=torch.nn.functional.normalize(torch.randn(batch, width, generator=gen), dim=-1),
        text_features=torch.nn.functional.normalize(torch.randn(batch, groups, width, generator=gen), dim=-1),
        logit_scale=torch.tensor(10.0),
        image_tokens=torch.randn(batch, patches, width, generator=gen),
        text_tokens=torch.randn(batch, groups, length, width, generator=gen),
        text_mask=torch.ones(batch, groups, length, dtype=torch.bool),
        neg_valid=torch.ones(batch, groups - 1, dtype=torch.bool),
        output_dict=True,
    )
    assert list(out) == ["contrastive_loss", "local_hn_loss"] and out["local_hn_loss"] > 0


def test_styles_map_onto_negative_kinds():
    assert train_flags.negative_kinds("fsc-clip") == ("swap", "replace", "shuffle")
    assert train_flags.negative_kinds("negclip") == ("swap",)
    assert train_flags.negative_kinds("ngram_shuffle_2") == ("shuffle",)
    assert train_flags.negative_kinds("shuffle, replace") == ("shuffle", "replace")
    assert train_flags.negative_kinds(None) == ()


@pytest.fixture(scope="module")
def tokenizer():
    return SimpleTokenizer(context_length=32)


def test_negative_captions_make_a_caption_block(tokenizer):
    captions = NegativeCaptions(tokenizer, kinds=("swap", "replace", "shuffle"), seed=3)
    block = captions(["one cat next to three dogs"])
    assert block.shape == (1, 4, 32)
    negatives, valid = captions.negatives("one cat next to three dogs")
    assert all(valid)
    assert torch.equal(block[0], tokenizer(["one cat next to three dogs", *negatives]))
    # "dog" has nothing to swap or shuffle: those rows are missing, its replacement is there.
    assert captions.negatives("dog")[1] == [False, True, False]
    dog = captions("dog")[0]
    assert (dog[[1, 3]] == MISSING_TOKEN).all() and torch.equal(
        dog[2], tokenizer(captions.negatives("dog")[0][1:2])[0]
    )
    with pytest.raises(ValueError, match="one caption per call"):
        captions(["a", "b"])


def test_csv_negclip_draws_one_negative_per_row_seed_and_epoch(tokenizer):
    rows = [("a dog", ("a cat", "a cow", "a hen")), ("a dog", ("a fox",)), ("a bird", ())]
    epoch = SharedEpoch(0)
    captions = NegativeCaptions(tokenizer, seed=3, rows=rows, epoch=epoch)
    assert captions.num_negatives == 1

    def draws(captions, epochs=range(8)):
        out = []
        for e in epochs:
            captions.epoch.set_value(e)
            for row, (caption, _) in enumerate(rows):
                captions.row = row
                out.append(captions.negatives(caption))
        return out

    first = draws(captions)
    again = draws(NegativeCaptions(tokenizer, seed=3, rows=rows, epoch=SharedEpoch(0)))
    assert first == again  # the same for a (seed, epoch, row), in any instance or process
    assert first != draws(NegativeCaptions(tokenizer, seed=4, rows=rows, epoch=SharedEpoch(0)))
    row0 = [negatives[0] for negatives, _ in first[0::3]]
    assert set(row0) <= set(rows[0][1]) and len(set(row0)) > 1  # new draws across epochs
    assert all(negatives == ["a fox"] for negatives, _ in first[1::3])  # its own row's list
    assert all(result == ([""], [False]) for result in first[2::3])  # no negatives: a missing slot
    captions.row = 2
    block = captions("a bird")
    assert block.shape == (1, 2, 32) and (block[0, 1] == MISSING_TOKEN).all()
    captions.row = 0
    with pytest.raises(RuntimeError, match="row 0 holds the caption 'a dog', the dataset gave 'a bird'"):
        captions("a bird")
    with pytest.raises(RuntimeError, match="must set .row"):
        NegativeCaptions(tokenizer, rows=rows)("a dog")
    with pytest.raises(ValueError, match="not both"):
        NegativeCaptions(tokenizer, rows=rows, precomputed={})


def test_negatives_depend_on_seed_epoch_and_caption_only(tokenizer):
    epoch = SharedEpoch(0)
    captions = NegativeCaptions(tokenizer, kinds=("swap", "replace", "shuffle"), seed=0, epoch=epoch)
    first = [captions(c) for c in CAPTIONS]
    again = NegativeCaptions(tokenizer, kinds=("swap", "replace", "shuffle"), seed=0, epoch=SharedEpoch(0))
    assert all(torch.equal(a, b) for a, b in zip(first, (again(c) for c in CAPTIONS), strict=True))
    epoch.set_value(1)
    assert not all(torch.equal(a, captions(c)) for a, c in zip(first, CAPTIONS, strict=True))
    other_seed = NegativeCaptions(
        tokenizer, kinds=("swap", "replace", "shuffle"), seed=1, epoch=SharedEpoch(0)
    )
    assert not all(torch.equal(a, other_seed(c)) for a, c in zip(first, CAPTIONS, strict=True))


class _Captions(torch.utils.data.Dataset):
    def __init__(self, tokenize):
        self.tokenize = tokenize

    def __len__(self):
        return len(CAPTIONS)

    def __getitem__(self, i):
        return self.tokenize([CAPTIONS[i]])[0]  # as open_clip's CsvDataset calls its tokenizer


def test_data_workers_make_the_same_negatives_for_the_shared_epoch(tokenizer):
    epoch = SharedEpoch(0)
    captions = NegativeCaptions(tokenizer, kinds=("swap", "replace", "shuffle"), seed=5, epoch=epoch)
    loader = torch.utils.data.DataLoader(
        _Captions(captions),
        batch_size=4,
        num_workers=2,
        persistent_workers=True,
        multiprocessing_context="fork",
    )
    for value in (0, 1):
        epoch.set_value(value)  # what DataInfo.set_epoch does, with the workers already running
        in_workers = torch.cat(list(loader))
        in_process = torch.cat([captions(c) for c in CAPTIONS])
        assert in_workers.shape == (8, 4, 32) and torch.equal(in_workers, in_process)


def test_precomputed_and_generated_negatives_together(tokenizer):
    precomputed = {"one cat next to three dogs": ("one dog next to three cats",), "dog": ()}
    captions = NegativeCaptions(tokenizer, kinds=("replace",), precomputed=precomputed)
    assert captions.num_negatives == 2
    block = captions("one cat next to three dogs")[0]
    assert torch.equal(block[1], tokenizer(["one dog next to three cats"])[0])  # precomputed first
    assert (captions("dog")[0, 1] == MISSING_TOKEN).all() and (captions("dog")[0, 2] != MISSING_TOKEN).any()
    with pytest.raises(KeyError, match="'a cat' is not a caption of the --hard-negatives-key table"):
        captions("a cat")


@pytest.mark.parametrize("model_class", [open_clip.CLIP, open_clip.CustomTextCLIP])
@pytest.mark.parametrize("dense", [True, False])
def test_the_grouped_forward_returns_fscloss_arguments(tokenizer, model_class, dense):
    torch.manual_seed(0)
    model = model_class(**TINY_CONFIG, output_dict=True)  # as open_clip_train creates it
    enable_grouped_captions(model, dense=dense)
    assert type(model).__name__ == "Grouped" + model_class.__name__ and isinstance(model, model_class)
    if dense:
        model.fsc_token_ids = dense_token_ids(tokenizer)
    captions = NegativeCaptions(tokenizer, kinds=("swap", "replace", "shuffle"), seed=1)
    texts = torch.cat([captions(c) for c in ["dog", *CAPTIONS[:2]]])  # (3, 4, 32); "dog" misses two
    images = torch.randn(3, 3, 32, 32)
    out = model(images, texts)
    assert out["neg_valid"].tolist() == [[False, True, False], [True, True, True], [True, True, True]]
    assert out["text_features"].shape == (3, 4, 32)
    expected = model.encode_text(texts.clamp(min=0).flatten(0, 1), normalize=True).view(3, 4, 32)
    present = texts[:, :, 0] != MISSING_TOKEN
    assert torch.allclose(out["text_features"][present], expected[present], atol=1e-6)
    assert torch.allclose(out["image_features"], model.encode_image(images, normalize=True), atol=1e-6)
    if dense:
        assert out["text_tokens"].shape == (3, 4, 32, 32) and out["text_mask"].shape == (3, 4, 32)
        assert not out["text_mask"][0, 1].any()  # a missing negative counts no position
        assert out["image_tokens"].shape == (3, 16, 32)
    else:
        assert "text_tokens" not in out
    plain = model(images, texts[:, 0])  # validation and zero-shot: open_clip's own forward
    assert torch.allclose(plain["text_features"], out["text_features"][:, 0], atol=1e-6)
    assert set(model.state_dict()) == set(model_class(**TINY_CONFIG).state_dict())


def test_only_clip_models_get_the_grouped_forward():
    with pytest.raises(UsageError, match="trains open_clip CLIP and CustomTextCLIP models; got Linear"):
        enable_grouped_captions(torch.nn.Linear(2, 2), dense=False)
    with pytest.raises(
        UsageError, match="--return-dense-tokens: encode_dense needs open_clip's VisionTransf"
    ):
        enable_grouped_captions(open_clip.create_model("RN50"), dense=True)
    with pytest.raises(UsageError, match="known here for open_clip's SimpleTokenizer"):
        dense_token_ids(object())


def _table(path: Path, rows, header=("filepath", "title", "neg_caption"), sep="\t") -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=sep)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_reading_a_negatives_column(tmp_path):
    path = _table(
        tmp_path / "negclip.tsv",
        [
            ["0.jpg", "a dog on a man", "a man on a dog"],
            ["1.jpg", "a red cube", json.dumps(["a blue cube", "a red ball"])],
            ["2.jpg", "a red cube", "['a red ball', 'a green cube']"],  # the same caption: pooled
            ["3.jpg", "a cat", "[]"],
        ],
    )
    table = read_negatives_column(str(path), "neg_caption", caption_column="title", sep="\t")
    assert table == {
        "a dog on a man": ("a man on a dog",),
        "a red cube": ("a blue cube", "a red ball", "a green cube"),
        "a cat": (),
    }


@pytest.mark.parametrize(
    "cell, message",
    [
        ("", "row 2 of .*: the cell is empty"),
        ("['a', ", "row 2 of .*: .* is neither a JSON nor a Python list of captions"),
        ("[1, 2]", "row 2 of .*: .* holds 1, which is not a caption"),
        ("['ok', '  ']", "row 2 of .*: .* which is not a caption"),
    ],
)
def test_an_unreadable_cell_names_the_column_and_the_row(tmp_path, cell, message):
    path = _table(tmp_path / "bad.tsv", [["0.jpg", "a dog", "a cat"], ["1.jpg", "a cow", cell]])
    with pytest.raises(UsageError, match=f"--hard-negatives-key neg_caption: {message}"):
        read_negatives_column(str(path), "neg_caption", caption_column="title", sep="\t")


def test_a_missing_column_is_named(tmp_path):
    path = _table(tmp_path / "t.tsv", [["0.jpg", "a dog", "a cat"]])
    columns = r"\['filepath', 'title', 'neg_caption'\]"
    with pytest.raises(
        UsageError,
        match=rf"--hard-negatives-key negs: .*t.tsv has no such column negs; its columns are {columns}",
    ):
        read_negatives_column(str(path), "negs", caption_column="title", sep="\t")
    with pytest.raises(UsageError, match="--csv-caption-key caption: .*has no such column caption"):
        read_negatives_column(str(path), "neg_caption", caption_column="caption", sep="\t")


def test_wise_ft_interpolates_state_dicts():
    pretrained = {"w": torch.zeros(3), "n": torch.tensor([1, 2])}
    finetuned = {"w": torch.tensor([4.0, 8.0, -4.0], dtype=torch.float64), "n": torch.tensor([1, 2])}
    merged = wise_ft(pretrained, finetuned, 0.25)
    assert torch.equal(merged["w"], torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64))
    assert torch.equal(merged["n"], finetuned["n"])
    assert torch.equal(wise_ft(pretrained, finetuned, 0)["w"], pretrained["w"].double())
    with pytest.raises(ValueError, match=r"only in finetuned \['x'\], only in pretrained \[\]"):
        wise_ft(pretrained, {**finetuned, "x": torch.ones(1)}, 0.5)
    with pytest.raises(ValueError, match=r"w: pretrained \(2,\) vs finetuned \(3,\)"):
        wise_ft({**pretrained, "w": torch.zeros(2)}, finetuned, 0.5)
    with pytest.raises(ValueError, match="n: the integer tensors differ"):
        wise_ft({**pretrained, "n": torch.tensor([1, 3])}, finetuned, 0.5)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        wise_ft(pretrained, finetuned, 1.5)


def test_comp_validation_writes_tensorboard_scalars_and_results(tmp_path, monkeypatch):
    fake = types.ModuleType("fsc_losses.eval")
    fake.evaluate = lambda model, names, root, **kwargs: {f"{name}::all": 0.5 for name in names}
    monkeypatch.setitem(sys.modules, "fsc_losses.eval", fake)

    class Writer:
        scalars = []

        def add_scalar(self, *scalar):
            self.scalars.append(scalar)

    args = argparse.Namespace(
        comp_validation_datasets=["aro", "valse"],
        comp_data_root=str(tmp_path),
        comp_batch_size=8,
        device="cpu",
        save_logs=True,
        checkpoint_path=str(tmp_path),
        wandb=False,
    )
    model = torch.nn.Linear(1, 1)
    metrics = compositional_validation(
        model, {}, 3, args, tb_writer=Writer(), tokenizer=None, preprocess=None
    )
    assert metrics == {"aro::all": 0.5, "valse::all": 0.5}
    assert Writer.scalars == [("val/aro::all", 0.5, 3), ("val/valse::all", 0.5, 3)]
    assert json.loads((tmp_path / "results.jsonl").read_text()) == {**metrics, "epoch": 3}


def test_comp_validation_follows_the_validation_schedule():
    args = argparse.Namespace(val_frequency=2, epochs=5)
    assert [e for e in range(7) if is_due(e, args)] == [0, 2, 4, 5, 6]
    assert not any(is_due(e, argparse.Namespace(val_frequency=0, epochs=5)) for e in range(7))


def test_zero_shot_accuracy_counts_the_top_k_hits():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5], [0.6, 0.1, 0.3]])
    target = torch.tensor([1, 2, 0, 0])
    assert _topk_hits(logits, target, topk=(1, 2, 3)) == [2.0, 3.0, 4.0]


def test_ddp_accepts_the_cpu_device_ids_open_clip_passes(tmp_path):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_gloo_available() or dist.is_initialized():
        pytest.skip("needs gloo and no process group yet")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        cpu = [torch.device("cpu")]
        with pytest.raises(ValueError, match="device_ids"):  # what open_clip_train 3.3 runs into
            torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2), device_ids=cpu)
        assert _DDPWithoutCPUDeviceIds(torch.nn.Linear(2, 2), device_ids=cpu).device_ids is None
    finally:
        dist.destroy_process_group()
