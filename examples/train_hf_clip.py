"""Fine-tune a Hugging Face transformers CLIP or SigLIP model with FSCLoss on transformers' Trainer,
on a CSV of ``image_path,caption`` rows.

    python examples/train_hf_clip.py --csv pairs.csv --model openai/clip-vit-base-patch32 \\
        --output_dir finetuned --num_train_epochs 1 --per_device_train_batch_size 64 \\
        --learning_rate 1e-5 --bf16
    torchrun --nproc_per_node 8 examples/train_hf_clip.py ...   # the same, on 8 processes

``--model`` is anything ``from_pretrained`` takes (a hub id or a local folder); the model and its
processor (tokenizer and image processor) are loaded from it. Every ``TrainingArguments`` option is
a command-line option (``--gradient_accumulation_steps``, ``--save_strategy``, ``--fsdp``, ...).
``FSCTrainer`` (``fsc_losses.integrations.hf_trainer``) minimises ``FSCLoss``: the CLIP term
(softmax for CLIP, SigLIP's sigmoid for SigLIP, gathered across processes) + global HN loss + local
HN loss, and logs each term. ``FSCCollator`` makes K rule-based hard negatives per caption
(``fsc_losses.negatives``), or reads them from ``--negatives_column`` (a JSON list per row), and
tokenizes the ``B * (1 + K)`` captions. The checkpoints and the final model in ``--output_dir`` are
the model's own (``save_pretrained``, with the processor), so ``from_pretrained`` loads them. With
``--from_config`` the model starts from random weights built from the config in ``--model`` (useful
only for smoke tests).
"""

import csv
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoProcessor, HfArgumentParser, TrainingArguments, set_seed

from fsc_losses import FSCLoss
from fsc_losses.integrations.hf_trainer import FSCCollator, FSCTrainer


@dataclass
class ScriptArguments:
    csv: str = field(metadata={"help": "CSV file with an image_path,caption header"})
    model: str = field(metadata={"help": "model id or folder for from_pretrained (model and processor)"})
    from_config: bool = field(
        default=False, metadata={"help": "random weights from --model's config (smoke tests)"}
    )
    contrastive: str | None = field(
        default=None,
        metadata={
            "choices": ["softmax", "sigmoid"],
            "help": "the CLIP term; default: sigmoid for SigLIP models, softmax otherwise",
        },
    )
    negatives_column: str | None = field(
        default=None, metadata={"help": "CSV column of precomputed negatives (a JSON list per row)"}
    )


def read_rows(csv_path: str | Path) -> list[dict]:
    """The CSV's rows as dicts, the ``image_path`` column resolved against the CSV's folder and
    renamed ``image`` (what ``FSCCollator`` reads)."""
    csv_path = Path(csv_path)
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["image"] = csv_path.parent / row.pop("image_path")
    return rows


def parse_args(argv=None) -> tuple[ScriptArguments, TrainingArguments]:
    return HfArgumentParser((ScriptArguments, TrainingArguments)).parse_args_into_dataclasses(argv)


def make_trainer(script: ScriptArguments, training: TrainingArguments) -> FSCTrainer:
    """The model, the processor, the collator and the loss in a ``FSCTrainer``."""
    set_seed(training.seed)  # the initialisation of --from_config
    if script.from_config:
        model = AutoModel.from_config(AutoConfig.from_pretrained(script.model))
    else:
        model = AutoModel.from_pretrained(script.model)
    processor = AutoProcessor.from_pretrained(script.model)
    collator = FSCCollator(
        processor.tokenizer,
        processor.image_processor,
        negatives_column=script.negatives_column,
        seed=training.seed,
        max_length=model.config.text_config.max_position_embeddings,  # padded to the tower's length
    )
    loss_fn = None  # FSCTrainer's default: the model's own contrastive term, gathered across processes
    if script.contrastive is not None:
        loss_fn = FSCLoss(
            contrastive=script.contrastive,
            gather_with_grad=True,
            local_loss=True,
            rank=training.process_index,
            world_size=training.world_size,
        )
    return FSCTrainer(
        model=model,
        args=training,
        train_dataset=read_rows(script.csv),
        data_collator=collator,
        processing_class=processor,  # saved with every checkpoint
        loss_fn=loss_fn,
    )


def main(argv=None) -> FSCTrainer:
    """Train as the command line says and save the model to ``--output_dir``; returns the trainer
    (``trainer.state.log_history`` holds the logged loss terms)."""
    trainer = make_trainer(*parse_args(argv))
    trainer.train()
    trainer.save_model()
    if trainer.is_world_process_zero():
        print(f"saved to {trainer.args.output_dir}", flush=True)
    return trainer


if __name__ == "__main__":
    main()
