"""The LVLM path on every architecture docs/lvlm.md lists: a tiny random instance of each, built
from its transformers config class, with its real processor class (tests/lvlm_models.py).

Every reference here is the model's and the processor's own: the processor's output for the
prompt (with the long caption, or as PaliGemma's suffix, for the NTP sequences), the model's own
forward on it (every processor output) and its own logits (soft-capped where the model caps
them). A soft prompt enters the references through a stand-in input embedding layer written here,
not through ``SoftPrompt``'s hook.
"""

import contextlib
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("accelerate")
if int(transformers.__version__.split(".")[0]) < 5:
    pytest.skip("the LVLM glue needs transformers >= 5", allow_module_level=True)

from fsc_losses import ContrastiveNTPLoss  # noqa: E402
from fsc_losses.functional import ntp_loss  # noqa: E402
from fsc_losses.integrations.hf_trainer import ContrastiveNTPCollator, ContrastiveNTPTrainer  # noqa: E402
from fsc_losses.integrations.lvlm import (  # noqa: E402
    SoftPrompt,
    add_dual_encoder_modules,
    hidden_states,
    lm_head_softcap,
    lora_target_modules,
)

from .hf_models import training_args  # noqa: E402
from .lvlm_models import ARCHITECTURES, SOFT, SOFT_TOKENS, rows  # noqa: E402

ROWS = 4
KINDS = ("image", "text", "ntp")


class Setup:
    """One architecture's processor, collator, float32 model (eval mode) and rows."""

    def __init__(self, architecture):
        self.architecture = architecture
        self.processor = architecture.processor()
        self.tokenizer = self.processor.tokenizer
        self.model = architecture.model(self.processor).eval()
        self.collator = ContrastiveNTPCollator(self.processor, **architecture.prompts())
        self.rows = rows(ROWS)
        self.batch = self.collator(self.rows)
        self.soft_id = self.tokenizer.convert_tokens_to_ids(SOFT)
        self.cap = lm_head_softcap(self.model)

    def reference(self, kind: str, side: str):
        """The ``kind`` sequences as the processor makes them, padded on ``side``."""
        prompts = self.architecture.prompts()
        images = [[row["image"]] for row in self.rows]
        padding = dict(padding=True, padding_side=side, return_tensors="pt")
        if kind == "image":
            out = self.processor(text=[prompts["image_prompt"]] * ROWS, images=images, **padding)
        elif kind == "text":
            texts = [prompts["text_prompt"].format(caption=row["caption"]) for row in self.rows]
            if self.collator.prefix_lm:  # PaliGemma's prompt layout; its processor needs an image
                texts = [f"{self.tokenizer.bos_token}{text}\n" for text in texts]
                out = self.tokenizer(texts, add_special_tokens=False, return_token_type_ids=True, **padding)
            else:
                out = self.processor(text=texts, **padding)
        elif self.collator.prefix_lm:
            captions = [row["long_caption"] for row in self.rows]
            out = self.processor(
                text=[prompts["ntp_prompt"]] * ROWS, images=images, suffix=captions, **padding
            )
        else:
            eos = self.tokenizer.eos_token
            texts = [f"{prompts['ntp_prompt']} {row['long_caption']} {eos}" for row in self.rows]
            out = self.processor(text=texts, images=images, **padding)
        out.pop("labels", None)
        return dict(out)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and a busy machine's second thread waits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def setup(request):
    architecture = ARCHITECTURES[request.param]
    architecture.require()
    return Setup(architecture)


def repad(sequences: dict, side: str, pad_id: int) -> dict:
    """The sequences with each row's real positions moved to the ``side`` of the padding."""
    mask = sequences["attention_mask"].bool()
    out = {}
    for name, value in sequences.items():
        fill = pad_id if name == "input_ids" else -100 if name == "labels" else 0
        moved = torch.full_like(value, fill)
        for row in range(len(value)):
            real = value[row][mask[row]]
            if side == "right":
                moved[row, : len(real)] = real
            else:
                moved[row, value.shape[1] - len(real) :] = real
        out[name] = moved
    return out


def images_of(setup, kind):
    return setup.batch["images"] if kind in ("image", "ntp") else {}


def sequences_of(setup, kind, side):
    sequences = dict(setup.batch[f"{kind}_sequences"])
    sequences.pop("labels", None)
    return repad(sequences, side, setup.tokenizer.pad_token_id)


@contextlib.contextmanager
def written_soft_prompt(model, vectors, placeholder_id):
    """The model's input embedding layer, with ``vectors`` written at a row's placeholders in
    order: a stand-in for ``SoftPrompt``'s hook, for the references."""
    embedding = model.get_input_embeddings()

    class Written(torch.nn.Module):
        def forward(self, ids):
            out = embedding(ids)
            if ids.dim() != 2:
                return out
            out = out.clone()
            for row in range(len(ids)):
                for k, position in enumerate((ids[row] == placeholder_id).nonzero().flatten().tolist()):
                    out[row, position] = vectors[k].to(out.dtype)
            return out

    model.set_input_embeddings(Written())
    try:
        yield
    finally:
        model.set_input_embeddings(embedding)


def head_logits(model, cap, states):
    """The model's own LM head on ``states``, soft-capped as its forward caps."""
    logits = model.lm_head(states)
    return logits if cap is None else cap * torch.tanh(logits / cap)


def last_real(states, mask):
    return torch.stack([states[row, mask[row].nonzero().max()] for row in range(len(states))])


# ---- the collator and hidden_states against the processor and the model's own forward -------


@pytest.mark.parametrize("side", ["left", "right"])
def test_sequences_and_states_equal_the_processors_and_the_models_own(setup, side):
    """For the image, text and NTP sequences, padded on either side: the collator's sequences are
    the processor's (every per-token field, the image inputs), and ``hidden_states`` with a soft
    prompt, through the LM head, gives the model's own logits on the processor's output."""
    soft = SoftPrompt(SOFT_TOKENS, setup.model.config.get_text_config().hidden_size, setup.soft_id)
    for kind in KINDS:
        reference = setup.reference(kind, side)
        images = images_of(setup, kind)
        sequences = sequences_of(setup, kind, side)
        assert set(sequences) | set(images) == set(reference), kind
        for name, value in reference.items():
            mine = sequences[name] if name in sequences else images[name]
            assert torch.equal(mine, value), (kind, name)
        with torch.no_grad():
            states = hidden_states(setup.model, soft_prompt=soft, **sequences, **images)
            with written_soft_prompt(setup.model, soft.embeddings, setup.soft_id):
                own = setup.model(**reference).logits
        logits = head_logits(setup.model, setup.cap, states)
        torch.testing.assert_close(logits, own, rtol=1e-5, atol=1e-5, msg=kind)


def test_no_state_leaks_between_calls(setup):
    """The rope deltas Qwen's own forward caches for generation neither change a later call nor
    are changed by one: a text batch of another size after an image batch equals the model's own
    forward on it alone."""
    base = setup.model.base_model
    image = sequences_of(setup, "image", "left")
    text = {name: value[:3] for name, value in sequences_of(setup, "text", "left").items()}
    with torch.no_grad():
        setup.model(**image, **setup.batch["images"])
        cached = getattr(base, "rope_deltas", None)
        states = hidden_states(setup.model, **text)
        assert getattr(base, "rope_deltas", None) is cached
        hidden_states(setup.model, **image, **setup.batch["images"])
        assert getattr(base, "rope_deltas", None) is cached
        with contextlib.ExitStack() as stack:
            if hasattr(base, "rope_deltas"):
                assert cached is not None  # the premise: the image forward cached them
                base.rope_deltas = None
                stack.callback(setattr, base, "rope_deltas", cached)
            own = setup.model(**text).logits
    torch.testing.assert_close(head_logits(setup.model, setup.cap, states), own, rtol=1e-5, atol=1e-5)


def test_one_rows_image_changes_only_that_rows_embedding(setup):
    """No row sees another's image (the image inputs are flattened across rows for most models)."""
    other = [dict(row) for row in setup.rows]
    other[1]["image"] = 255 - other[1]["image"]  # the same size: the same layout of positions
    embeddings = []
    for batch in (setup.batch, setup.collator(other)):
        with torch.no_grad():
            states = hidden_states(setup.model, **batch["image_sequences"], **batch["images"])
        embeddings.append(last_real(states, batch["image_sequences"]["attention_mask"]))
    changed = (embeddings[0] - embeddings[1]).abs().amax(dim=1)
    assert changed[1] > 1e-3
    torch.testing.assert_close(embeddings[1][[0, 2, 3]], embeddings[0][[0, 2, 3]], rtol=1e-6, atol=1e-6)


def test_ntp_term_equals_cross_entropy_on_the_models_own_logits(setup):
    sequences = sequences_of(setup, "ntp", "right")
    labels = setup.batch["ntp_sequences"]["labels"]
    with torch.no_grad():
        states = hidden_states(setup.model, **sequences, **setup.batch["images"])
        own = setup.model(**sequences, **setup.batch["images"])
        weight = setup.model.get_output_embeddings().weight
        term = ntp_loss(states, weight, labels, softcap=setup.cap)
    expected = F.cross_entropy(own.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    torch.testing.assert_close(term, expected, rtol=1e-5, atol=1e-6)
    answer = [
        setup.tokenizer(row["long_caption"], add_special_tokens=False)["input_ids"] for row in setup.rows
    ]
    assert [labels[r][labels[r] != -100].tolist() for r in range(ROWS)] == [
        a + [setup.tokenizer.eos_token_id] for a in answer
    ]
    if setup.cap is not None:  # the cap matters at these logits: without it the term is off
        uncapped = ntp_loss(states, weight, labels)
        assert (uncapped - expected).abs() > 100 * 1e-5


# ---- ContrastiveNTPTrainer with LoRA and a soft prompt, saved and reloaded --------------------


def dual_encoder(setup, seed=0):
    """A fresh model of the architecture with the soft prompt and temperature, and its LoRA
    (random, so that it changes the states) on the language model's attention."""
    lvlm = setup.architecture.model(setup.processor, seed=seed)
    width = lvlm.config.get_text_config().hidden_size
    names = add_dual_encoder_modules(lvlm, SoftPrompt(SOFT_TOKENS, width, setup.soft_id, std=1.0))
    lora = peft.LoraConfig(
        r=2, target_modules=lora_target_modules(lvlm), modules_to_save=names, init_lora_weights=False
    )
    return peft.get_peft_model(lvlm, lora)


def objective_from_the_models_own_forward(setup, model):
    """ContrastiveNTPLoss's terms by hand: the model's own forward on the processor's sequences
    (the soft prompt through the stand-in embedding layer), the last real position's state, the
    InfoNCE over the cosine similarities, F.cross_entropy on the model's own logits."""
    lvlm = model.get_base_model()
    embeddings = []
    with written_soft_prompt(lvlm, lvlm.soft_prompt.embeddings, setup.soft_id):
        for kind in ("image", "text"):
            reference = setup.reference(kind, "right")
            states = lvlm.model(**reference).last_hidden_state  # what the LM head reads:
            torch.testing.assert_close(head_logits(lvlm, setup.cap, states), lvlm(**reference).logits)
            embeddings.append(F.normalize(last_real(states, reference["attention_mask"]), dim=-1))
    similarity = lvlm.logit_scale() * embeddings[0] @ embeddings[1].T
    truth = torch.arange(ROWS)
    contrastive = (F.cross_entropy(similarity, truth) + F.cross_entropy(similarity.T, truth)) / 2
    reference = setup.reference("ntp", "right")
    labels = repad(setup.batch["ntp_sequences"], "right", setup.tokenizer.pad_token_id)["labels"]
    logits = lvlm(**reference).logits
    ntp = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    return contrastive + ntp


def test_trainer_trains_lora_and_soft_prompt_and_the_adapter_reloads(setup, tmp_path):
    """compute_loss on a batch equals the objective from the model's own forward; two training
    steps move exactly the LoRA weights, the soft prompt and the temperature; the saved adapter,
    loaded into a fresh model, gives the trained model's loss."""
    model = dual_encoder(setup)
    lvlm = model.get_base_model()
    decoder = next(name for name, module in lvlm.named_modules() if module is lvlm.get_decoder())
    lora = {
        name.removeprefix("base_model.model.")
        for name, _ in model.named_modules()
        if name.endswith(".lora_A")
    }
    layers = lvlm.config.get_text_config().num_hidden_layers
    assert len(lora) == 4 * layers and all(name.startswith(f"{decoder}.layers.") for name in lora)

    args = training_args(tmp_path, per_device_train_batch_size=2, max_steps=2)
    trainer = ContrastiveNTPTrainer(
        model=model, args=args, train_dataset=setup.rows, data_collator=setup.collator
    )
    model.eval()
    head_calls = []
    hook = lvlm.lm_head.register_forward_hook(lambda *_: head_calls.append(1))
    with torch.no_grad():
        loss = trainer.compute_loss(model, setup.batch)
        hook.remove()
        assert head_calls == []  # the NTP term never makes the (N, V) logits
        torch.testing.assert_close(
            loss, objective_from_the_models_own_forward(setup, model), rtol=1e-4, atol=1e-4
        )

    initial = {name: value.clone() for name, value in model.state_dict().items()}
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and all(math.isfinite(entry["loss"]) for entry in logs)
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    changed = {name for name, value in model.state_dict().items() if not torch.equal(value, initial[name])}
    assert changed == trained
    assert {"lora_A", "lora_B", "soft_prompt", "logit_scale"} <= {
        part for name in trained for part in name.split(".")
    }

    model.save_pretrained(tmp_path / "adapter")
    fresh = setup.architecture.model(setup.processor, seed=0)
    add_dual_encoder_modules(
        fresh, SoftPrompt(SOFT_TOKENS, fresh.config.get_text_config().hidden_size, setup.soft_id)
    )
    loaded = peft.PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            trainer.compute_loss(loaded, setup.batch), trainer.compute_loss(model, setup.batch)
        )


def readme_block(marker: str) -> str:
    """The README's python block that holds ``marker``."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if marker in b]
    return block


def test_the_readmes_loop_gives_the_objective_from_the_models_own_forward(setup):
    """README.md's LVLM loop, run as written on the architecture's processor and model, gives the
    objective from the model's own forward (its text sequences once came from the processor
    alone, which PaliGemma's refuses)."""
    model = dual_encoder(setup).eval()
    lvlm = model.get_base_model()
    names = dict(
        processor=setup.processor,
        lvlm=lvlm,
        rows=setup.rows,
        soft_prompt=lvlm.soft_prompt,
        logit_scale=lvlm.logit_scale.log_scale.reshape(()),  # the README's log-scale parameter
        **setup.architecture.prompts(),
    )
    with torch.no_grad():
        exec(readme_block("ContrastiveNTPLoss("), names)
        torch.testing.assert_close(
            names["loss"], objective_from_the_models_own_forward(setup, model), rtol=1e-4, atol=1e-4
        )


# ---- errors -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llava():
    return Setup(ARCHITECTURES["LLaVA-1.5"])


def test_hidden_states_refuses_an_input_the_forward_does_not_name(llava):
    image = llava.batch["image_sequences"]
    with pytest.raises(
        ValueError, match=r"LlavaModel.forward takes no \['image_grid_thw'\]; it takes \[.*'image_sizes'"
    ):
        hidden_states(llava.model, **image, **llava.batch["images"], image_grid_thw=torch.ones(ROWS, 3))


def test_lora_target_modules_refuses_projections_the_language_model_lacks(llava):
    assert (
        lora_target_modules(llava.model, ("gate_proj", "down_proj"))
        == r"model\.language_model\..*\.(gate_proj|down_proj)"
    )
    with pytest.raises(
        ValueError, match=r"\(model.language_model\) has no linear layers named \['qkv'\]; its linear"
    ):
        lora_target_modules(llava.model, ("q_proj", "qkv"))


def test_collator_refuses_a_per_token_field_it_cannot_extend(llava):
    class Processor:  # LLaVA's, with one more per-token field
        image_token, tokenizer = llava.processor.image_token, llava.tokenizer

        def __call__(self, **kwargs):
            out = llava.processor(**kwargs)
            out["segment_ids"] = torch.zeros_like(out["input_ids"])
            return out

    collator = ContrastiveNTPCollator(Processor(), **llava.architecture.prompts())
    with pytest.raises(
        ValueError, match=r"for image_prompt has a per-token field 'segment_ids' the collator"
    ):
        collator(llava.rows)


def test_trainer_refuses_a_loss_without_the_models_softcap(tmp_path):
    paligemma2 = Setup(ARCHITECTURES["PaliGemma 2"])
    model = dual_encoder(paligemma2)
    args = training_args(tmp_path)
    with pytest.raises(
        ValueError, match=r"loss_fn has softcap=None, but the model's LM head soft-caps its logits at 0.05"
    ):
        ContrastiveNTPTrainer(
            model=model, args=args, data_collator=paligemma2.collator, loss_fn=ContrastiveNTPLoss()
        )
    trainer = ContrastiveNTPTrainer(model=model, args=args, data_collator=paligemma2.collator)
    assert trainer.loss_fn.softcap == 0.05
