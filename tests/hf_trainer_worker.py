"""What test_hf_trainer_distributed.py runs, under torchrun (2 CPU processes, gloo) and in one
process: on the same 4 rows, from the same seeded weights, one SGD step of FSCTrainer (CLIP, SigLIP)
and of ContrastiveNTPTrainer (the example's LLaVA with LoRA and a soft prompt), each model saved with its
logs; and, on 2 processes, ContrastiveNTPTrainer.compute_loss on the model sharded with FSDP2's
``fully_shard``, whose gradients are saved. Every model runs in float64: the two sides add the same
terms in different orders, and in float32 that difference is as large as the tolerance a test
could set without missing real errors.

    python -m torch.distributed.run --nproc_per_node 2 -m tests.hf_trainer_worker OUT
"""

import json
import os
import sys
from pathlib import Path

import torch

from fsc_losses.integrations.hf_trainer import ContrastiveNTPTrainer, FSCCollator, FSCTrainer

from . import hf_models
from .example_data import load_example
from .gloo import end_worker

ROWS = 4
LVLM_RUN = ["--train-scenes", str(ROWS), "--eval-scenes", "2", "--soft-tokens", "2", "--seed", "1"]


def training_args(out: Path, world_size: int):
    return hf_models.training_args(
        out,
        per_device_train_batch_size=ROWS // world_size,  # one step on the whole data either way
        max_steps=1,
        optim="sgd",  # a step proportional to the gradient, comparable across runs (Adam's is not)
        learning_rate=0.1,
        max_grad_norm=0.0,
        ddp_backend="gloo" if world_size > 1 else None,
    )


def train_and_save(trainer, out: Path) -> None:
    """The trained model and its first log in ``out``; in one process, the model before the step
    in ``out / "initial"`` too, so that the test compares the steps, not weights much larger."""
    if trainer.args.world_size == 1:
        trainer.save_model(str(out / "initial"))
    trainer.train()
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        (out / "logs.json").write_text(json.dumps(trainer.state.log_history[0]))


def lvlm_parts():
    example = load_example("finetune_lvlm")
    _, collator, rows, _, model = example.build(example.parse_args(LVLM_RUN))
    return collator, rows, model.double()


def fsdp_gradients(out: Path, world_size: int) -> None:
    """compute_loss on this rank's half of the rows, the model sharded by ``fully_shard``; the
    full gradient of every trainable parameter, saved by rank 0."""
    from torch.distributed.fsdp import fully_shard

    collator, rows, model = lvlm_parts()
    trainer = ContrastiveNTPTrainer(model=model, args=training_args(out, world_size), data_collator=collator)
    for layer in model.get_base_model().model.language_model.layers:
        fully_shard(layer)
    fully_shard(model)  # the root: the LM head's weight is gathered in its forward
    rank, half = trainer.args.process_index, ROWS // world_size
    trainer.compute_loss(model, collator(rows[rank * half : (rank + 1) * half])).backward()
    grads = {name: p.grad.full_tensor() for name, p in model.named_parameters() if p.requires_grad}
    if rank == 0:
        torch.save(grads, out / "fsdp_grads.pt")


def main(out: Path) -> None:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    for family in hf_models.FAMILIES:
        processor = hf_models.processor(family)
        trainer = FSCTrainer(
            model=hf_models.model(family).double(),
            args=training_args(out / family, world_size),
            train_dataset=hf_models.rows(ROWS),
            data_collator=FSCCollator(processor.tokenizer, processor.image_processor),
        )
        train_and_save(trainer, out / family)
    collator, rows, model = lvlm_parts()
    trainer = ContrastiveNTPTrainer(
        model=model, args=training_args(out / "lvlm", world_size), train_dataset=rows, data_collator=collator
    )
    train_and_save(trainer, out / "lvlm")
    if world_size > 1:
        fsdp_gradients(out, world_size)
        end_worker()  # rank 0 saves last


if __name__ == "__main__":
    main(Path(sys.argv[1]))
