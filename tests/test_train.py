"""``python -m fsc_losses.train``: open_clip_train's own trainer with the FSC-CLIP loss, run for real
in this process on a tiny model and tiny data (CPU, a few steps per run)."""

import json
import math
import sys
import types

import pytest
import torch

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("open_clip_train.main")
from open_clip_train.data import SharedEpoch  # noqa: E402

from fsc_losses import FSCLoss  # noqa: E402
from fsc_losses.eval import evaluate  # noqa: E402
from fsc_losses.integrations.open_clip import encode_dense  # noqa: E402
from fsc_losses.train import UsageError, wise_ft  # noqa: E402
from fsc_losses.train.captions import MISSING_TOKEN, NegativeCaptions  # noqa: E402
from fsc_losses.train.loss import TrainerLoss  # noqa: E402
from fsc_losses.train.models import GroupedCLIP  # noqa: E402

from .eval_fixtures import write_sugarcrepe, write_winoground  # noqa: E402
from .example_data import CAPTIONS  # noqa: E402
from .trainer_runs import (  # noqa: E402
    PAPER_FLAGS,
    Workspace,
    checkpoint,
    logged_terms,
    recording,
    train,
    train_lines,
)

pytestmark = pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true:UserWarning")


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("train"))


@pytest.fixture(autouse=True)
def in_workspace(space, monkeypatch):
    # open_clip's CsvDataset opens image paths relative to the working directory.
    monkeypatch.chdir(space.folder)


@pytest.fixture(scope="module")
def paper_run(space):
    """The paper's FSC-CLIP flags on pairs.csv: 2 steps; the run's folder, each step's loss
    terms and each step's ``(images, texts)``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(space.folder)
        with recording(TrainerLoss) as losses, recording(GroupedCLIP) as forwards:
            assert train(space, "paper", *PAPER_FLAGS) is None
    return space.run_dir("paper"), [out for _, _, out in losses], [inputs for _, inputs, _ in forwards]


def test_paper_flags_log_each_term(paper_run):
    run_dir, terms, _ = paper_run
    lines = train_lines(run_dir)
    assert len(lines) == 2 and len(terms) == 2
    first = logged_terms(lines[0])
    assert list(first) == ["Contrastive_loss", "Global_hn_loss", "Local_hn_loss", "Loss"]
    # The log shows the recorded, weighted terms and their sum.
    for key, value in terms[0].items():
        assert first[key.capitalize()] == pytest.approx(value.item(), rel=1e-4)
    assert first["Loss"] == pytest.approx(sum(v.item() for v in terms[0].values()), rel=1e-4)
    assert all(v > 0 and math.isfinite(v) for v in first.values())


def test_checkpoint_loads_into_plain_open_clip(paper_run, space):
    run_dir, _, _ = paper_run
    saved = checkpoint(run_dir)
    plain = open_clip.create_model(space.model_name)
    assert list(saved) == list(plain.state_dict())  # open_clip's keys, in open_clip's order

    loaded, _, _ = open_clip.create_model_and_transforms(
        space.model_name, pretrained=str(run_dir / "checkpoints" / "epoch_1.pt")
    )
    assert all(torch.equal(value, saved[key]) for key, value in loaded.state_dict().items())
    initial = open_clip.create_model(space.model_dir).state_dict()
    for key in (
        "visual.conv1.weight",
        "visual.proj",
        "token_embedding.weight",
        "text_projection",
        "logit_scale",
    ):
        assert not torch.equal(initial[key], saved[key]), key


def test_doubling_the_local_weight_doubles_the_first_local_term(paper_run, space):
    _, terms, _ = paper_run
    flags = [f if f != "0.2" else "0.4" for f in PAPER_FLAGS]
    assert flags[-1] == "0.4"
    with recording(TrainerLoss) as calls:
        train(space, "local-x2", *flags, "--epochs=1")
    doubled = calls[0][2]
    assert torch.equal(doubled["local_hn_loss"], 2 * terms[0]["local_hn_loss"])
    assert torch.equal(doubled["contrastive_loss"], terms[0]["contrastive_loss"])
    assert torch.equal(doubled["global_hn_loss"], terms[0]["global_hn_loss"])


def test_the_first_step_is_fscloss_on_the_batch(paper_run, space):
    """The logged terms are FSCLoss's on the batch, encoded here in FSCLoss's flat layout (the B
    true captions, then K blocks of B negatives) by the initial model."""
    _, terms, batches = paper_run
    images, texts = batches[0]
    batch, groups, length = texts.shape
    present = texts[:, :, 0] != MISSING_TOKEN
    flat = texts.masked_fill(~present[:, :, None], 0).transpose(0, 1).reshape(groups * batch, length)
    model = open_clip.create_model(space.model_dir)
    expected = FSCLoss(global_weight=0.5, local_weight=0.2, focal_gamma=2.0, label_smoothing=0.02)(
        **encode_dense(model, images, flat), neg_valid=present[:, 1:], output_dict=True
    )
    for key, value in expected.items():
        assert torch.allclose(terms[0][key], value, rtol=1e-5, atol=1e-6), key


def test_negatives_of_a_later_epoch_in_data_workers(space):
    """With data workers the negatives follow the epoch (one seed for both runs): epoch 1's
    batches hold exactly what NegativeCaptions makes for epoch 1."""
    with recording(GroupedCLIP) as calls:
        train(space, "workers", *PAPER_FLAGS, "--workers=2", "--epochs=2", "--seed=7")
    assert len(calls) == 4
    tokenizer = open_clip.get_tokenizer(space.model_dir)
    expected = {}
    for epoch in (0, 1):
        captions = NegativeCaptions(
            tokenizer, kinds=("swap", "replace", "shuffle"), seed=7, epoch=SharedEpoch(epoch)
        )
        expected[epoch] = {tuple(block[0, 0].tolist()): block[0] for block in map(captions, CAPTIONS)}
    for step, (_, (_, texts), _) in enumerate(calls):
        for block in texts:
            assert torch.equal(block, expected[step // 2][tuple(block[0].tolist())])
    assert any(not torch.equal(expected[0][k], expected[1][k]) for k in expected[0])


def test_clip_logs_only_the_contrastive_term(space):
    train(space, "clip", "--loss-name=clip")
    lines = train_lines(space.run_dir("clip"))
    assert lines and all(list(logged_terms(line)) == ["Contrastive_loss", "Loss"] for line in lines)


def test_precomputed_negatives_from_a_csv_column(space):
    # Each form a cell may take: one caption, a JSON list, a Python list literal, an empty list.
    negatives = {i: [caption.replace("a ", "the ", 1)] for i, caption in enumerate(CAPTIONS)}
    negatives[1] = ["two dogs standing on a wooden bench", "two cats sitting on a wooden bench"]
    negatives[3] = []
    cells = {i: negs[0] for i, negs in negatives.items() if negs}
    cells[1], cells[2], cells[3] = json.dumps(negatives[1]), repr(negatives[2]), "[]"
    table = space.folder / "negatives.csv"
    rows = [[f"{i}.png", caption, cells[i]] for i, caption in enumerate(CAPTIONS)]
    _write_csv(table, ["image_path", "caption", "neg_caption"], rows)

    with recording(GroupedCLIP) as calls:
        flags = ["--apply-global-neg-loss", "--hard-negatives-key=neg_caption"]
        train(space, "precomputed", *flags, data=space.csv_argv(table))
    tokenizer = open_clip.get_tokenizer(space.model_dir)
    caption_tokens = tokenizer(CAPTIONS)
    assert len(calls) == 2
    for _, (_, texts), out in calls:
        assert texts.shape == (4, 3, caption_tokens.shape[1])  # G = 1 + the longest list (2)
        for block, neg_valid in zip(texts, out["neg_valid"], strict=True):
            i = next(i for i, row in enumerate(caption_tokens) if torch.equal(row, block[0]))
            assert neg_valid.tolist() == [k < len(negatives[i]) for k in range(2)]
            for k in range(2):
                if k < len(negatives[i]):
                    assert torch.equal(block[1 + k], tokenizer([negatives[i][k]])[0])
                else:
                    assert (block[1 + k] == MISSING_TOKEN).all()
    first = logged_terms(train_lines(space.run_dir("precomputed"))[0])
    assert list(first) == ["Contrastive_loss", "Global_hn_loss", "Loss"]


def _write_csv(path, header, rows, delimiter=","):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.mark.parametrize("dataset", ["webdataset", "synthetic"])
def test_other_dataset_types_get_negatives_in_the_pipeline(space, dataset):
    data = {
        "webdataset": [f"--train-data={space.shard}", "--dataset-type=webdataset", "--train-num-samples=8"],
        "synthetic": ["--dataset-type=synthetic", "--train-num-samples=8"],
    }[dataset]
    with recording(GroupedCLIP) as models, recording(TrainerLoss) as losses:
        train(space, dataset, *PAPER_FLAGS, data=data)
    assert len(models) == 2
    for _, (_, texts), out in models:
        assert texts.shape[:2] == (4, 4)  # each caption with its swap, replace and shuffle negatives
        assert out["text_tokens"].shape[:3] == texts.shape
    if dataset == "webdataset":
        assert any(out["neg_valid"].any() for _, _, out in models)
    else:
        # "Dummy caption" gives no negative: every slot is masked, and the HN terms are exact zeros.
        assert not any(out["neg_valid"].any() for _, _, out in models)
        for _, _, terms in losses:
            assert terms["global_hn_loss"] == 0 and terms["local_hn_loss"] == 0


def test_accum_freq_2_equals_one_batch_of_twice_the_size(space):
    # With eps 1 Adam's first step is about lr * gradient, so equal steps mean equal gradients;
    # a small eps would blow gradients that are rounding noise (the key bias's) up to +-lr.
    one_step = ["--lr=1e-2", "--eps=1"]
    with recording(TrainerLoss) as big:
        train(space, "batch8", *PAPER_FLAGS, *one_step, "--batch-size=8")
    with recording(TrainerLoss) as accumulated:
        train(space, "accum2", *PAPER_FLAGS, *one_step, "--batch-size=4", "--accum-freq=2")
    # accum-freq 2 first caches both micro-batches' outputs without gradient, then runs the loss
    # once per micro-batch on the concatenation of both: each of those losses is the big batch's.
    assert len(big) == 1 and len(accumulated) == 2
    for _, _, terms in accumulated:
        for key, value in big[0][2].items():
            assert torch.allclose(terms[key], value, rtol=1e-5, atol=1e-6), key
    big_step, accum_step = checkpoint(space.run_dir("batch8")), checkpoint(space.run_dir("accum2"))
    initial = open_clip.create_model(space.model_dir).state_dict()
    for key, value in big_step.items():
        if key == "logit_scale":
            # open_clip passes the live logit_scale to every micro-batch's loss, so with
            # accumulation its gradient is the sum of accum-freq full-batch gradients (ClipLoss too).
            continue
        assert torch.allclose(accum_step[key], value, rtol=1e-6, atol=1e-7), key  # steps are ~1e-3
    assert not torch.equal(big_step["visual.proj"], initial["visual.proj"])


def test_resume_continues_from_the_checkpoint(paper_run, space):
    run_dir, _, _ = paper_run
    train(space, "resumed", *PAPER_FLAGS, "--epochs=2", f"--resume={run_dir / 'checkpoints' / 'epoch_1.pt'}")
    log = (space.run_dir("resumed") / "out.log").read_text()
    assert len(train_lines(run_dir)) == 2  # the runs since did not log into the first one's file
    assert "(epoch 1)" in log and "Start epoch 1" in log and "Start epoch 0" not in log
    assert not torch.equal(
        checkpoint(space.run_dir("resumed"), 2)["visual.proj"], checkpoint(run_dir)["visual.proj"]
    )


def test_validation_zero_shot_bf16_and_grad_checkpointing(space, monkeypatch):
    from open_clip_train import zero_shot

    # The zero-shot classifier of 1000 classes x 80 templates takes minutes on a CPU; 5 classes
    # (top-5 needs 5) and one template go through the same code.
    monkeypatch.setattr(zero_shot, "IMAGENET_CLASSNAMES", zero_shot.IMAGENET_CLASSNAMES[:5])
    monkeypatch.setattr(zero_shot, "OPENAI_IMAGENET_TEMPLATES", zero_shot.OPENAI_IMAGENET_TEMPLATES[:1])
    train(
        space,
        "validated",
        *PAPER_FLAGS,
        "--precision=amp_bf16",
        "--grad-checkpointing",
        f"--val-data={space.csv}",
        f"--imagenet-val={space.imagenet}",
        "--zeroshot-frequency=1",
    )
    terms = [logged_terms(line) for line in train_lines(space.run_dir("validated"))]
    assert terms and all(math.isfinite(v) for step in terms for v in step.values())
    results = [
        json.loads(line) for line in (space.run_dir("validated") / "checkpoints" / "results.jsonl").open()
    ]
    assert len(results) == 1
    for key in ("imagenet-zeroshot-val-top1", "image_to_text_R@1", "clip_val_loss"):
        assert math.isfinite(results[0][key]), key
    assert results[0]["num_samples"] == len(CAPTIONS)  # the validation captions, without negatives


def test_lora_trains_the_adapters_and_saves_merged_open_clip_weights(space):
    with recording(GroupedCLIP) as calls:
        train(space, "lora", *PAPER_FLAGS, "--lora-rank=2", "--lr=1e-2")
    trained = calls[-1][0].eval()  # still carrying its adapters
    saved = checkpoint(space.run_dir("lora"))
    initial = open_clip.create_model(space.model_dir).state_dict()
    assert sorted(saved) == sorted(initial)  # peft registers in_proj_weight anew at each forward
    # LoRA adapts the patch embedding, the attention in-projections and the MLPs; all else is frozen.
    adapted = ("conv1.weight", "attn.in_proj_weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    changed = {key for key in saved if not torch.equal(saved[key], initial[key])}
    assert changed == {key for key in saved if key.endswith(adapted)}

    loaded, _, _ = open_clip.create_model_and_transforms(
        space.model_name, pretrained=str(space.run_dir("lora") / "checkpoints" / "epoch_1.pt")
    )
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    texts = open_clip.get_tokenizer(space.model_dir)(CAPTIONS[:2])
    with torch.no_grad():
        assert torch.allclose(loaded.eval().encode_image(images), trained.encode_image(images), atol=1e-5)
        assert torch.allclose(loaded.encode_text(texts), trained.encode_text(texts), atol=1e-5)


def test_wise_ft_evaluates_the_interpolated_weights(paper_run, space):
    run_dir, _, _ = paper_run
    validation = [f"--val-data={space.csv}", *space.csv_argv()[1:]]
    with recording(open_clip.CLIP) as calls:
        train(
            space,
            "wise-ft",
            f"--model={space.model_name}",
            f"--pretrained={run_dir / 'checkpoints' / 'epoch_1.pt'}",
            "--wise-ft-alpha=0.25",
            f"--zeroshot-model={space.model_dir}",
            data=validation,
        )
    evaluated = calls[0][0].state_dict()
    expected = wise_ft(open_clip.create_model(space.model_dir).state_dict(), checkpoint(run_dir), 0.25)
    assert all(torch.allclose(evaluated[key], value, rtol=0, atol=1e-7) for key, value in expected.items())
    assert not torch.allclose(evaluated["visual.proj"], checkpoint(run_dir)["visual.proj"])
    assert (space.run_dir("wise-ft") / "checkpoints" / "results.jsonl").exists()


def test_comp_validation_is_logged_like_open_clips_validation(space, monkeypatch):
    seen = {}

    def evaluate(model, benchmarks, data_root, **kwargs):
        seen.update(
            model=model, training=model.training, benchmarks=benchmarks, data_root=data_root, **kwargs
        )
        return {"fake::swap": 0.25, "fake::replace": 0.75}

    # A stand-in with fsc_losses.eval's contract, for what the trainer does with its results.
    fake = types.ModuleType("fsc_losses.eval")
    fake.evaluate = evaluate
    fake.BENCHMARKS = {"fake_a": None, "fake_b": None}  # the names the trainer checks at start
    monkeypatch.setitem(sys.modules, "fsc_losses.eval", fake)
    train(
        space,
        "comp",
        *PAPER_FLAGS,
        f"--val-data={space.csv}",
        "--comp-validation-datasets",
        "fake_a",
        "fake_b",
        f"--comp-data-root={space.folder}",
        "--comp-batch-size=3",
    )
    assert isinstance(seen["model"], GroupedCLIP) and not seen["training"]
    assert seen["benchmarks"] == ["fake_a", "fake_b"] and seen["data_root"] == str(space.folder)
    assert seen["batch_size"] == 3 and seen["device"] == "cpu" and seen["progress"] is False
    assert isinstance(seen["tokenizer"], open_clip.tokenizer.SimpleTokenizer)  # no negatives
    assert seen["preprocess"].transforms[0].__class__.__name__ == "Resize"  # the validation transform
    run_dir = space.run_dir("comp")
    assert "Eval Epoch: 1 fake::swap: 0.2500\tfake::replace: 0.7500" in (run_dir / "out.log").read_text()
    results = [json.loads(line) for line in (run_dir / "checkpoints" / "results.jsonl").open()]
    assert results[-1] == {"fake::swap": 0.25, "fake::replace": 0.75, "epoch": 1}
    assert "clip_val_loss" in results[0]


def test_comp_validation_runs_fsc_losses_eval(space):
    """The real evaluator on fixtures of two benchmarks: the logged metrics are what
    ``fsc_losses.eval.evaluate`` gives, run independently, for the epoch-1 checkpoint."""
    root = space.folder / "benchmarks"
    keys = write_sugarcrepe(root) + write_winoground(root)
    train(
        space,
        "comp-eval",
        *PAPER_FLAGS,
        f"--val-data={space.csv}",
        "--comp-validation-datasets",
        "sugarcrepe",
        "winoground",
        f"--comp-data-root={root}",
    )
    run_dir = space.run_dir("comp-eval")
    logged = [json.loads(line) for line in (run_dir / "checkpoints" / "results.jsonl").open()][-1]
    assert logged.pop("epoch") == 1
    assert sorted(logged) == sorted(keys)
    # by config name: open_clip ignores `pretrained` for a local-dir: model
    model, _, preprocess = open_clip.create_model_and_transforms(
        space.model_name, pretrained=str(run_dir / "checkpoints" / "epoch_1.pt")
    )
    tokenizer = open_clip.get_tokenizer(space.model_name)
    expected = evaluate(model, ["sugarcrepe", "winoground"], root, tokenizer=tokenizer, preprocess=preprocess)
    assert logged == pytest.approx(expected, abs=1e-12)
    assert (
        f"sugarcrepe::swap_obj: {expected['sugarcrepe::swap_obj']:.4f}" in (run_dir / "out.log").read_text()
    )


def test_an_unknown_hard_negatives_column_is_named(space):
    with pytest.raises(UsageError, match=r"--hard-negatives-key neg_caption: .*pairs.csv has no such column"):
        train(space, "no-column", "--apply-global-neg-loss", "--hard-negatives-key=neg_caption")


@pytest.mark.parametrize("by", ["config name", "local-dir"])
def test_fine_tunes_from_a_checkpoint_with_pretrained(paper_run, space, by):
    # open_clip alone ignores --pretrained for a local-dir: model (it only logs a warning)
    run_dir, _, _ = paper_run
    pretrained = str(run_dir / "checkpoints" / "epoch_1.pt")
    with recording(GroupedCLIP) as calls:
        train(
            space,
            f"from-checkpoint-{by.replace(' ', '-')}",
            *PAPER_FLAGS,
            f"--model={space.model_name if by == 'config name' else space.model_dir}",
            f"--pretrained={pretrained}",
        )
    (_, (images, _), out) = calls[0]  # the first forward, before any step
    loaded = open_clip.create_model(space.model_name, pretrained=pretrained)
    with torch.no_grad():
        assert torch.allclose(out["image_features"], loaded.encode_image(images, normalize=True), atol=1e-6)


def test_fp16_autocast_with_a_grad_scaler(space):
    train(space, "amp", *PAPER_FLAGS, "--precision=amp")
    terms = [logged_terms(line) for line in train_lines(space.run_dir("amp"))]
    assert len(terms) == 2 and all(math.isfinite(v) for step in terms for v in step.values())


def test_siglip_trains_with_the_sigmoid_contrastive_term(space):
    with recording(GroupedCLIP) as forwards, recording(TrainerLoss) as losses:
        train(
            space,
            "siglip",
            "--siglip",
            "--apply-global-neg-loss",
            "--add-random-text-hard-negatives=fsc-clip",
        )
    out, terms = forwards[0][2], losses[0][2]
    assert "logit_bias" in out  # open_clip adds one for --siglip
    siglip = open_clip.loss.SigLipLoss()
    expected = siglip(
        out["image_features"], out["text_features"][:, 0], out["logit_scale"], out["logit_bias"]
    )
    assert torch.allclose(terms["contrastive_loss"], expected, rtol=1e-5)


# The fork's README training commands (github ytaek-oh/fsc-clip, README.md, "Training Scripts"),
# COCO and COCO with LoRA: only the model and the data paths are changed below.
FORK_README_COCO = """
    --save-frequency 1 --zeroshot-frequency 1 --val-frequency 1 --report-to tensorboard --log-every-n-steps 50
    --train-data="train_neg_clip" --model ViT-B-32 --pretrained openai
    --lr=5e-6 --wd=0.1 --epochs=5 --warmup 50 --batch-size=256 --workers=4
    --add-random-text-hard-negatives="fsc-clip"
    --loss-name="fsc-clip" --neg-loss-name="focal_loss" --focal-gamma 2.0 --neg-label-smoothing 0.02
    --apply-global-neg-loss --neg-loss-weight 0.5
    --return-dense-tokens --apply-local-neg-loss --local-neg-weight 0.2
    --logs="./logs/fsc-clip"
    --name fsc-clip-coco
"""
FORK_README_COCO_LORA = (
    FORK_README_COCO.replace("--lr=5e-6", "--lr=5e-5")
    .replace("--workers=4", "--workers=4 --lora-rank 4")
    .replace("fsc-clip-coco", "fsc-clip-lora-coco")
)


@pytest.mark.filterwarnings("ignore:This DataLoader will create 4 worker processes:UserWarning")
@pytest.mark.parametrize("command", [FORK_README_COCO, FORK_README_COCO_LORA], ids=["coco", "coco-lora"])
def test_the_forks_readme_commands_run_as_written(space, tmp_path, monkeypatch, command):
    """Every flag as the README writes it, on a NegCLIP-format TSV (title, filepath, neg_caption,
    neg_image). The TSV holds fewer rows than one batch of 256, so each epoch has no step (a step
    of this size takes half a minute on a CPU): the training steps of these flags are tested above;
    here the command line, the five epochs, TensorBoard and the checkpoints."""
    monkeypatch.chdir(tmp_path)
    rows = [
        [c, str(space.folder / f"{i}.png"), repr([c.replace("a ", "the ", 1)]), "[1]"]
        for i, c in enumerate(CAPTIONS)
    ]
    _write_csv(tmp_path / "train_neg_clip.tsv", ["title", "filepath", "neg_caption", "neg_image"], rows, "\t")
    weights = str(space.model_dir.removeprefix("local-dir:")) + "/open_clip_model.safetensors"
    argv = (
        command.replace('"train_neg_clip"', str(tmp_path / "train_neg_clip.tsv"))
        .replace("ViT-B-32 --pretrained openai", f"{space.model_dir} --pretrained {weights}")
        .replace('"', "")
        .split()
    )
    assert train_main(argv) is None
    run_dir = tmp_path / "logs" / "fsc-clip" / argv[argv.index("--name") + 1]
    assert "Start epoch 4" in (run_dir / "out.log").read_text()
    # the fork keeps only the last checkpoint (open_clip 3.3 alone would keep all five)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch_5.pt"]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_force_context_length_keeps_the_first_positions(space):
    """As the fork: the first 16 of the checkpoint's 32 text positions (open_clip 3.3 alone would
    interpolate them)."""
    import open_clip_train.main as open_clip_main

    from fsc_losses.train.trainer import _Run

    run = _Run(open_clip_main)
    run.parse_args(
        [*space.base_argv("context"), *space.csv_argv(), *PAPER_FLAGS, "--force-context-length=16"]
    )
    model, _, _ = run.create_model_and_transforms(space.model_dir, None, force_context_length=16)
    folder = open_clip.create_model(space.model_dir).state_dict()["positional_embedding"]
    assert torch.equal(model.positional_embedding.detach(), folder[:16])
    assert model.attn_mask.shape == (16, 16)
    interpolated = open_clip.create_model(space.model_dir, force_context_length=16).positional_embedding
    assert not torch.allclose(interpolated, folder[:16])


def test_csv_negclip_trains_on_one_negative_drawn_per_row(space):
    """The fork's csv_negclip: K = 1, drawn from the row's neg_caption list, the same draw for a
    (seed, epoch, row); a row whose list is empty has no negative."""
    lists = {
        i: [c.replace("a ", "the ", 1), c.replace("a ", "one ", 1), c + " again"]
        for i, c in enumerate(CAPTIONS)
    }
    lists[2], lists[5] = [], ["only this one"]
    table = space.folder / "negclip.csv"
    rows = [[f"{i}.png", caption, repr(lists[i])] for i, caption in enumerate(CAPTIONS)]
    _write_csv(table, ["image_path", "caption", "neg_caption"], rows)
    flags = ["--apply-global-neg-loss", "--add-random-text-hard-negatives=csv_negclip", "--seed=5"]
    with recording(GroupedCLIP) as calls:
        train(space, "csv-negclip", *flags, data=space.csv_argv(table))
    tokenizer = open_clip.get_tokenizer(space.model_dir)
    expected = NegativeCaptions(
        tokenizer, seed=5, rows=[(c, tuple(lists[i])) for i, c in enumerate(CAPTIONS)], epoch=SharedEpoch(0)
    )
    caption_tokens = tokenizer(CAPTIONS)
    seen = 0
    for _, (_, texts), out in calls:
        assert texts.shape[:2] == (4, 2)  # each caption and one negative
        for block, neg_valid in zip(texts, out["neg_valid"], strict=True):
            row = next(i for i, tokens in enumerate(caption_tokens) if torch.equal(tokens, block[0]))
            expected.row = row
            assert torch.equal(block, expected(CAPTIONS[row])[0])
            assert neg_valid.item() == bool(lists[row])
            seen += 1
    assert seen == 8


def train_main(argv):
    from fsc_losses.train import main

    return main(argv)
