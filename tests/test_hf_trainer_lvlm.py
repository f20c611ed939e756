"""fsc_losses.integrations.hf_trainer for LVLMs: ContrastiveNTPCollator and ContrastiveNTPTrainer
on the tiny random LLaVA of examples/finetune_lvlm.py (peft LoRA, a soft prompt, a learned
temperature), a few steps on the CPU. The two-process run is in test_hf_trainer_distributed.py."""

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("accelerate")
if int(transformers.__version__.split(".")[0]) < 5:
    pytest.skip("the LVLM glue needs transformers >= 5", allow_module_level=True)

from fsc_losses import ContrastiveNTPLoss  # noqa: E402
from fsc_losses.integrations.hf_trainer import ContrastiveNTPCollator, ContrastiveNTPTrainer  # noqa: E402
from fsc_losses.integrations.lvlm import sequence_embeddings  # noqa: E402

from .example_data import load_example  # noqa: E402
from .hf_models import training_args  # noqa: E402

SOFT_TOKENS = 3
TINY = ["--train-scenes", "8", "--eval-scenes", "4", "--soft-tokens", str(SOFT_TOKENS), "--seed", "1"]


@pytest.fixture(scope="module")
def example():
    return load_example("finetune_lvlm")


@pytest.fixture(scope="module")
def parts(example):
    """The example's processor, collator and rows (the model: ``fresh_model``)."""
    processor, collator, train_rows, _, _ = example.build(example.parse_args(TINY))
    return processor, collator, train_rows


def fresh_model(example):
    return example.build(example.parse_args(TINY))[-1]


def direct_terms(model, batch):
    """ContrastiveNTPLoss called directly on the last-token embeddings and the long captions' hidden
    states, with the LM head's weight."""
    lvlm = model.get_base_model()
    soft = lvlm.soft_prompt
    image, text, ntp = (batch[f"{kind}_sequences"] for kind in ("image", "text", "ntp"))
    images = sequence_embeddings(
        lvlm, image["input_ids"], image["attention_mask"], batch["images"]["pixel_values"], soft
    )
    texts = sequence_embeddings(lvlm, text["input_ids"], text["attention_mask"], soft_prompt=soft)
    states = lvlm.model(
        input_ids=ntp["input_ids"],
        attention_mask=ntp["attention_mask"],
        pixel_values=batch["images"]["pixel_values"],
    ).last_hidden_state
    return ContrastiveNTPLoss()(
        images,
        texts,
        lvlm.logit_scale(),
        hidden_states=states,
        lm_head_weight=lvlm.lm_head.weight,
        labels=ntp["labels"],
        output_dict=True,
    )


# ---- ContrastiveNTPCollator -------------------------------------------------------------------


def test_collator_makes_the_three_sequences(example, parts):
    processor, collator, rows = parts
    batch = collator(rows[:4])
    tokenizer = processor.tokenizer
    image_id, soft_id = (tokenizer.convert_tokens_to_ids(t) for t in (example.IMAGE, example.SOFT))
    assert list(batch) == ["image_sequences", "text_sequences", "ntp_sequences", "images"]
    assert list(batch["images"]) == ["pixel_values"] and batch["images"]["pixel_values"].shape == (
        4,
        3,
        32,
        32,
    )
    for name in ("image", "text"):
        sequences = batch[f"{name}_sequences"]
        assert list(sequences) == ["input_ids", "attention_mask"]
        ids, mask = sequences["input_ids"], sequences["attention_mask"]
        assert (mask[:, -1] == 1).all()  # the tokenizer pads on the left: the last position is real
        assert ((ids == soft_id).sum(dim=1) == SOFT_TOKENS).all()
    assert ((batch["image_sequences"]["input_ids"] == image_id).sum(dim=1) == 16).all()  # one per patch
    for row in range(4):
        text = batch["text_sequences"]["input_ids"][row][
            batch["text_sequences"]["attention_mask"][row].bool()
        ]
        assert (
            text.tolist() == tokenizer(collator.text_prompt.format(caption=rows[row]["caption"]))["input_ids"]
        )

    ntp = batch["ntp_sequences"]
    ids, mask, labels = ntp["input_ids"], ntp["attention_mask"], ntp["labels"]
    assert (mask[:, 0] == 1).all() and not (ids == soft_id).any()  # right-padded, no soft prompt
    assert ((ids == image_id).sum(dim=1) == 16).all()
    counted = labels != -100
    assert torch.equal(ids[counted], labels[counted]) and not counted[mask == 0].any()
    prompt = processor(text=[collator.ntp_prompt], images=[rows[0]["image"]])["input_ids"][0]
    for row in range(4):
        answer = tokenizer(rows[row]["long_caption"], add_special_tokens=False)["input_ids"]
        assert labels[row][counted[row]].tolist() == answer + [tokenizer.eos_token_id]
        assert ids[row][: len(prompt)].tolist() == list(prompt) and not counted[row][: len(prompt)].any()


def test_collator_errors(parts):
    processor, collator, rows = parts
    with pytest.raises(ValueError, match=r"row 1 of the batch has no column 'long_caption'"):
        collator([rows[0], {k: v for k, v in rows[1].items() if k != "long_caption"}])
    prompts = dict(
        image_prompt=collator.image_prompt, text_prompt=collator.text_prompt, ntp_prompt=collator.ntp_prompt
    )
    with pytest.raises(
        ValueError, match=r"image_prompt must hold the processor's image placeholder '<image>' once"
    ):
        ContrastiveNTPCollator(processor, **{**prompts, "image_prompt": "summary :"})
    with pytest.raises(ValueError, match=r"ntp_prompt must hold the processor's image placeholder"):
        ContrastiveNTPCollator(processor, **{**prompts, "ntp_prompt": "<image> <image> describe :"})
    with pytest.raises(ValueError, match=r"ntp_prompt must hold the processor's image placeholder"):
        ContrastiveNTPCollator(processor, **{**prompts, "ntp_prompt": "describe :"})
    with pytest.raises(ValueError, match=r"text_prompt must hold '\{caption\}'"):
        ContrastiveNTPCollator(processor, **{**prompts, "text_prompt": "summary :"})
    with pytest.raises(ValueError, match=r"text_prompt must not hold the image placeholder '<image>'"):
        ContrastiveNTPCollator(processor, **{**prompts, "text_prompt": "<image> {caption} :"})


# ---- ContrastiveNTPTrainer --------------------------------------------------------------------


@pytest.mark.parametrize("bf16", [False, True])
def test_trainer_loss_equals_the_direct_call_and_never_runs_the_lm_head(example, parts, tmp_path, bf16):
    _, collator, rows = parts
    model = fresh_model(example)
    trainer = ContrastiveNTPTrainer(
        model=model, args=training_args(tmp_path, bf16=bf16), data_collator=collator
    )
    batch = collator(rows[:4])
    head_calls = []
    model.get_base_model().lm_head.register_forward_hook(lambda *_: head_calls.append(1))
    loss = trainer.compute_loss(model, batch)
    assert head_calls == []  # the NTP term never makes the (N, V) logits
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        expected = direct_terms(model, batch)
    torch.testing.assert_close(loss, sum(term.float() for term in expected.values()))
    if not bf16:  # the NTP term is the model's own causal-LM loss of the long captions
        own = model.get_base_model()(**batch["ntp_sequences"], **batch["images"]).loss
        torch.testing.assert_close(expected["ntp_loss"], own)


@pytest.mark.slow
def test_training_with_lora_and_soft_prompt_logs_terms_and_the_checkpoint_reloads(example, parts, tmp_path):
    """Activation checkpointing on (the long captions' sequences hold no trainable input, yet
    LoRA learns from them); exactly the trainable parameters move; the adapter checkpoint holds
    the LoRA weights, the soft prompt and the temperature."""
    processor, collator, rows = parts
    model = fresh_model(example)
    initial = {name: value.clone() for name, value in model.state_dict().items()}
    args = training_args(tmp_path, activation_checkpointing=True, save_strategy="steps", save_steps=2)
    trainer = ContrastiveNTPTrainer(
        model=model, args=args, train_dataset=rows, data_collator=collator, processing_class=processor
    )
    trainer.train()

    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        assert entry["loss"] == pytest.approx(entry["contrastive_loss"] + entry["ntp_loss"], rel=1e-5)
    changed = {name for name, value in model.state_dict().items() if not torch.equal(value, initial[name])}
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert changed == trained
    assert {"soft_prompt", "logit_scale", "lora_A", "lora_B", "multi_modal_projector"} <= {
        part for name in trained for part in name.split(".")
    }

    loaded = example.load_trained(str(tmp_path / "checkpoint-2"), example.parse_args(TINY))
    state = loaded.state_dict()
    assert all(
        torch.equal(state[name], value) for name, value in model.state_dict().items() if name in trained
    )
    batch = collator(rows[:4])
    torch.testing.assert_close(
        sum(direct_terms(loaded, batch).values()), sum(direct_terms(model, batch).values())
    )


def test_trainer_errors(example, parts, tmp_path):
    processor, collator, _ = parts
    with pytest.raises(ValueError, match=r"has no logit_scale module: .*add_dual_encoder_modules"):
        ContrastiveNTPTrainer(
            model=example.build_lvlm(processor.tokenizer, seed=0),
            args=training_args(tmp_path),
            data_collator=collator,
        )
    model = fresh_model(example)
    fewer = ContrastiveNTPCollator(
        processor,
        image_prompt=collator.image_prompt.replace(example.SOFT, "", 1),
        text_prompt=collator.text_prompt,
        ntp_prompt=collator.ntp_prompt,
    )
    with pytest.raises(ValueError, match=r"image_prompt .* tokenizes to 2 soft-prompt placeholders .* has 3"):
        ContrastiveNTPTrainer(model=model, args=training_args(tmp_path), data_collator=fewer)
    with pytest.raises(ValueError, match=r"loss_fn has rank=1, world_size=2, but this process is 0 of 1"):
        ContrastiveNTPTrainer(
            model=model,
            args=training_args(tmp_path),
            data_collator=collator,
            loss_fn=ContrastiveNTPLoss(rank=1, world_size=2),
        )
