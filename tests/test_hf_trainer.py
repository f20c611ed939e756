"""fsc_losses.integrations.hf_trainer for CLIP and SigLIP: FSCCollator and FSCTrainer on tiny
random transformers models, a few steps on the CPU. The two-process run is in
test_hf_trainer_distributed.py."""

import copy
import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("tokenizers")

from fsc_losses import FSCLoss  # noqa: E402
from fsc_losses.integrations.hf_trainer import FSCCollator, FSCTrainer  # noqa: E402
from fsc_losses.integrations.transformers import encode_dense, token_ids  # noqa: E402
from fsc_losses.negatives import make_hard_negatives  # noqa: E402

from . import hf_models  # noqa: E402

CONTRASTIVE = {"clip": "softmax", "siglip": "sigmoid"}
TERMS = {"contrastive_loss", "global_hn_loss", "local_hn_loss"}


@pytest.fixture(scope="module", params=hf_models.FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def processor(family):
    return hf_models.processor(family)


@pytest.fixture(scope="module")
def rows():
    return hf_models.rows()


def collator(processor, **kwargs):
    return FSCCollator(processor.tokenizer, processor.image_processor, **kwargs)


def direct_terms(model, batch, family, ids):
    """FSCLoss called directly on encode_dense's outputs for the batch."""
    out = encode_dense(model, batch["pixel_values"], batch["input_ids"], batch.get("attention_mask"), **ids)
    return FSCLoss(contrastive=CONTRASTIVE[family])(**out, neg_valid=batch["neg_valid"], output_dict=True)


# ---- FSCCollator ------------------------------------------------------------------------------


def test_collator_makes_the_flat_caption_layout(processor, rows):
    batch = collator(processor)(rows[:4])
    captions = [row["caption"] for row in rows[:4]]
    negatives, neg_valid = make_hard_negatives(captions, seed=0)
    texts = processor.tokenizer(
        captions + negatives,
        padding="max_length",
        truncation=True,
        max_length=hf_models.CONTEXT,
        return_tensors="pt",
    )
    assert torch.equal(batch["input_ids"], texts["input_ids"])  # B true captions, then K blocks of B
    assert torch.equal(batch["neg_valid"], neg_valid) and batch["neg_valid"].shape == (4, 3)
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert torch.equal(batch["attention_mask"], texts["attention_mask"])
    # a caption's negatives do not depend on its batch: reproducible whatever the batching
    shifted = collator(processor)(rows[2:6])
    k_rows = [[b + 4 * k for b in range(4)] for k in range(4)]
    for k in range(4):
        assert torch.equal(batch["input_ids"][k_rows[k][2:]], shifted["input_ids"][k_rows[k][:2]])
    assert not torch.equal(collator(processor, seed=1)(rows[:4])["input_ids"], batch["input_ids"])


def test_collator_reads_precomputed_negatives(processor, rows):
    given = [["a blue cube", ""], ["two cats", None], ["a big cat", "a small cat"], ["x", "y"]]
    features = [dict(row, negs=negs) for row, negs in zip(rows[:4], given, strict=True)]
    features[3]["negs"] = json.dumps(given[3])  # a JSON list, as a CSV cell holds it
    make = collator(processor, negatives_column="negs")
    assert make.columns == ("image", "caption", "negs")
    batch = make(features)
    texts = [row["caption"] for row in rows[:4]] + [g[k] or "" for k in range(2) for g in given]
    expected = processor.tokenizer(
        texts, padding="max_length", truncation=True, max_length=hf_models.CONTEXT, return_tensors="pt"
    )
    assert torch.equal(batch["input_ids"], expected["input_ids"])
    assert batch["neg_valid"].tolist() == [[True, False], [True, False], [True, True], [True, True]]


def test_collator_opens_image_paths(processor, rows, tmp_path):
    from PIL import Image

    Image.fromarray(rows[0]["image"]).save(tmp_path / "0.png")
    from_path = collator(processor)([{"image": tmp_path / "0.png", "caption": "a cat"}])
    from_array = collator(processor)([{"image": rows[0]["image"], "caption": "a cat"}])
    assert torch.equal(from_path["pixel_values"], from_array["pixel_values"])


@pytest.mark.parametrize(
    "change, kwargs, message",
    [
        (lambda f: f[2].pop("caption"), {}, r"row 2 of the batch has no column 'caption'"),
        (
            lambda f: f[1].update(caption=3),
            {},
            r"column 'caption', row 1 of the batch: a caption must be a str",
        ),
        (
            lambda f: f[0].update(text="a cat"),
            {"caption_column": "text"},
            r"row 1 of the batch has no column 'text'",
        ),
        (
            lambda f: f[3].pop("negs"),
            {"negatives_column": "negs"},
            r"row 3 of the batch has no column 'negs'",
        ),
        (
            lambda f: f[1].update(negs="[a, b"),
            {"negatives_column": "negs"},
            r"column 'negs', row 1 .* JSON list",
        ),
        (lambda f: f[2].update(negs=7), {"negatives_column": "negs"}, r"column 'negs', row 2 .* list of str"),
        (
            lambda f: f[2].update(negs=["a", 1]),
            {"negatives_column": "negs"},
            r"column 'negs', row 2 .* list of str",
        ),
        (
            lambda f: f[3].update(negs=["a"]),
            {"negatives_column": "negs"},
            r"column 'negs', row 3 .* 1 negatives",
        ),
        (lambda f: f[1].update(image="missing.png"), {}, r"column 'image', row 1 .* cannot read image"),
    ],
)
def test_collator_errors_name_the_column_and_row(
    processor, rows, change, kwargs, message, monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)
    features = [dict(row, negs=["a cat", "a dog"]) for row in rows[:4]]
    change(features)
    with pytest.raises(ValueError, match=message):
        collator(processor, **kwargs)(features)


# ---- FSCTrainer -------------------------------------------------------------------------------


@pytest.mark.parametrize("bf16", [False, True])
def test_trainer_loss_equals_fscloss_called_directly(family, processor, rows, tmp_path, bf16):
    """On the same batch, in fp32 and bf16; and as evaluation's eval_loss."""
    model = hf_models.model(family)
    make = collator(processor)
    trainer = FSCTrainer(model=model, args=hf_models.training_args(tmp_path, bf16=bf16), data_collator=make)
    assert trainer.loss_fn.contrastive == CONTRASTIVE[family]
    batch = make(rows[:4])
    loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # what Trainer's bf16 means on the CPU
        expected = direct_terms(model, batch, family, token_ids(processor.tokenizer))
    torch.testing.assert_close(loss, sum(term.float() for term in expected.values()))
    assert torch.equal(outputs["loss"], loss)
    if bf16:  # the mixed precision did apply
        assert not torch.allclose(
            loss.float(), sum(direct_terms(model, batch, family, make.token_ids).values())
        )
    else:  # evaluation computes the same loss without labels
        assert trainer.evaluate(eval_dataset=rows[:4])["eval_loss"] == pytest.approx(loss.item(), rel=1e-6)


def test_training_logs_each_term_as_trainer_logs_its_loss(rows, tmp_path):
    """4 steps of 2 micro-batches (gradient accumulation), a log every 2 steps, an extra dataset
    column: each log holds each term's mean over its 2 steps' 4 micro-batches, each computed with
    the weights of its step (the initial ones, then those of the checkpoints), and the terms sum to
    the logged loss."""
    processor = hf_models.processor("clip")
    seen = []

    class Recording(FSCCollator):
        def __call__(self, features):
            seen.append(super().__call__(features))
            return seen[-1]

    model = hf_models.model("clip")
    weights = [copy.deepcopy(model)]  # the weights each step runs with
    args = hf_models.training_args(
        tmp_path,
        max_steps=4,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        logging_steps=2,
        save_strategy="steps",
        save_steps=1,
    )
    features = [dict(row, unused="dropped by remove_unused_columns") for row in rows]
    make = Recording(processor.tokenizer, processor.image_processor)
    trainer = FSCTrainer(model=model, args=args, train_dataset=features, data_collator=make)
    trainer.train()
    weights += [transformers.CLIPModel.from_pretrained(tmp_path / f"checkpoint-{step}") for step in (1, 2, 3)]

    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in logs] == [2, 4]
    assert len(seen) == 8  # micro-batches
    for log, steps in zip(logs, ((0, 1), (2, 3)), strict=True):
        terms = [
            direct_terms(weights[step], seen[2 * step + i], "clip", make.token_ids)
            for step in steps
            for i in (0, 1)
        ]
        for name in TERMS:
            assert log[name] == pytest.approx(sum(t[name].item() for t in terms) / 4, rel=1e-5), name
        assert log["loss"] == pytest.approx(sum(log[name] for name in TERMS), rel=1e-5)


@pytest.mark.slow
def test_checkpoint_reloads_with_from_pretrained(family, processor, rows, tmp_path):
    """bf16 and activation checkpointing on; the saved checkpoint is the trained model; CLIP's
    temperature is clamped at 100 after each step, SigLIP's is not."""
    model = hf_models.model(family)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(150))
    args = hf_models.training_args(
        tmp_path, bf16=True, activation_checkpointing=True, save_strategy="steps", save_steps=2
    )
    trainer = FSCTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=collator(processor),
        processing_class=processor,
    )
    trainer.train()
    assert model.is_activation_checkpointing
    assert all(math.isfinite(entry["local_hn_loss"]) for entry in trainer.state.log_history[:-1])

    loaded = type(model).from_pretrained(tmp_path / "checkpoint-2")
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(value, model.state_dict()[name]) for name, value in loaded.state_dict().items())
    reloaded = transformers.AutoProcessor.from_pretrained(tmp_path / "checkpoint-2")
    assert reloaded.tokenizer("a cat")["input_ids"] == processor.tokenizer("a cat")["input_ids"]
    scale = model.logit_scale.item()  # 2 steps of at most about lr each from log(150) = 5.01
    assert math.log(100) - 3e-3 < scale <= math.log(100) + 1e-6 if family == "clip" else scale > math.log(149)


def test_activation_checkpointing_gives_the_same_step(rows, tmp_path):
    processor = hf_models.processor("clip")
    trained = []
    for checkpointing in (False, True):
        model = hf_models.model("clip")
        args = hf_models.training_args(
            tmp_path / str(checkpointing), max_steps=1, activation_checkpointing=checkpointing
        )
        FSCTrainer(model=model, args=args, train_dataset=rows, data_collator=collator(processor)).train()
        assert model.is_activation_checkpointing == checkpointing
        trained.append(model.state_dict())
    for name, value in trained[0].items():
        torch.testing.assert_close(trained[1][name], value, msg=name)


def test_trainer_errors(tmp_path):
    model = hf_models.model("clip")
    make = collator(hf_models.processor("clip"))
    with pytest.raises(ValueError, match=r"loss_fn has rank=0, world_size=2, but this process is 0 of 1"):
        FSCTrainer(
            model=model,
            args=hf_models.training_args(tmp_path),
            data_collator=make,
            loss_fn=FSCLoss(world_size=2),
        )
    with pytest.raises(TypeError, match="supports transformers CLIPModel and SiglipModel"):
        FSCTrainer(model=model.vision_model, args=hf_models.training_args(tmp_path), data_collator=make)
    with pytest.raises(ValueError, match=r"has none: .* remove_unused_columns=False"):
        FSCTrainer(
            model=model, args=hf_models.training_args(tmp_path), data_collator=lambda features: features
        )
    FSCTrainer(
        model=model, args=hf_models.training_args(tmp_path, remove_unused_columns=False), data_collator=make
    )
