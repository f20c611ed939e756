"""fsc_losses.integrations.lvlm (SoftPrompt, hidden_states) and examples/finetune_lvlm.py, on tiny
randomly initialised transformers models."""

import math
import sys

import pytest
import torch

from fsc_losses.integrations.lvlm import LogitScale, SoftPrompt, add_dual_encoder_modules, hidden_states

from .example_data import load_example

PLACEHOLDER = 7


# ---- SoftPrompt -----------------------------------------------------------------------------


def test_soft_prompt_writes_its_vectors_in_order_at_the_placeholders():
    prompt = SoftPrompt(3, 4, PLACEHOLDER)
    ids = torch.tensor(
        [
            [1, 2, PLACEHOLDER, PLACEHOLDER, PLACEHOLDER, 5],
            [PLACEHOLDER, 3, PLACEHOLDER, 4, PLACEHOLDER, 6],
            [1, 2, 3, 4, 5, 6],  # no soft prompt in this row
        ]
    )
    embeds = torch.randn(3, 6, 4, requires_grad=True)
    out = prompt(ids, embeds)
    at = ids == PLACEHOLDER
    assert torch.equal(out[~at], embeds[~at])
    assert torch.equal(out[0, 2:5], prompt.embeddings)
    assert torch.equal(out[1, [0, 2, 4]], prompt.embeddings)
    upstream = torch.randn(3, 6, 4)
    grad_vectors, grad_embeds = torch.autograd.grad(out, (prompt.embeddings, embeds), upstream)
    torch.testing.assert_close(grad_vectors, upstream[0, 2:5] + upstream[1, [0, 2, 4]])
    assert torch.equal(grad_embeds, torch.where(at.unsqueeze(-1), 0.0, upstream))


def test_soft_prompt_follows_the_embeddings_dtype():
    prompt = SoftPrompt(2, 4, PLACEHOLDER, init=torch.arange(8.0).view(2, 4))
    out = prompt(torch.tensor([[PLACEHOLDER, 1, PLACEHOLDER]]), torch.zeros(1, 3, 4, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.equal(out[0, 2].float(), torch.arange(4.0, 8.0))


@pytest.mark.parametrize(
    "ids, embeds, message",
    [
        (
            torch.tensor([[PLACEHOLDER, 1, 2]]),
            torch.zeros(1, 3, 4),
            r"input_ids\[0\] holds 1 soft-prompt placeholders",
        ),
        (
            torch.tensor([[1, 2, 3]]),
            torch.zeros(1, 3, 5),
            r"inputs_embeds must have shape \(B, L, H\) = \(1, 3, 4\)",
        ),
        (torch.tensor([[1, 2, 3]]), torch.zeros(1, 4, 4), r"inputs_embeds must have shape"),
        (torch.tensor([1, 2, 3]), torch.zeros(1, 3, 4), r"input_ids must have shape \(B, L\)"),
    ],
)
def test_soft_prompt_bad_inputs(ids, embeds, message):
    with pytest.raises(ValueError, match=message):
        SoftPrompt(2, 4, PLACEHOLDER)(ids, embeds)


def test_soft_prompt_bad_construction():
    with pytest.raises(ValueError, match=r"init must have shape \(2, 4\)"):
        SoftPrompt(2, 4, PLACEHOLDER, init=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="num_tokens >= 1"):
        SoftPrompt(0, 4, PLACEHOLDER)


# ---- LogitScale and add_dual_encoder_modules -----------------------------------------------


def test_logit_scale_starts_at_one_over_the_temperature_and_is_capped():
    scale = LogitScale(temperature=0.05, max_scale=100.0)
    torch.testing.assert_close(scale(), torch.tensor(20.0))
    scale().backward()
    torch.testing.assert_close(scale.log_scale.grad, torch.tensor([20.0]))  # d exp(s) / ds
    with torch.no_grad():
        scale.log_scale.fill_(math.log(150))
    assert scale().item() == pytest.approx(100.0)
    with pytest.raises(ValueError, match="need temperature > 0"):
        LogitScale(temperature=0.0)


def test_add_dual_encoder_modules_registers_them_and_names_them_for_peft():
    model = torch.nn.Linear(2, 2)
    assert add_dual_encoder_modules(model) == ["logit_scale"]
    assert isinstance(model.logit_scale, LogitScale) and not hasattr(model, "soft_prompt")
    other = torch.nn.Linear(2, 2)
    prompt = SoftPrompt(2, 4, PLACEHOLDER)
    assert add_dual_encoder_modules(other, prompt, temperature=0.1) == ["logit_scale", "soft_prompt"]
    assert other.soft_prompt is prompt and other.logit_scale().item() == pytest.approx(10.0)
    assert {"logit_scale.log_scale", "soft_prompt.embeddings"} <= dict(other.named_parameters()).keys()
    with pytest.raises(ValueError, match="already has an attribute 'logit_scale'"):
        add_dual_encoder_modules(other)


# ---- hidden_states on transformers models ---------------------------------------------------

IMAGE_TOKEN = 99


@pytest.fixture(scope="module")
def transformers():
    module = pytest.importorskip("transformers")
    if int(module.__version__.split(".")[0]) < 5:
        pytest.skip(f"hidden_states needs transformers >= 5, found {module.__version__}")
    return module


@pytest.fixture(scope="module")
def peft():
    return pytest.importorskip("peft")


def tiny_llava(transformers):
    vision = transformers.CLIPVisionConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
    )
    text = transformers.LlamaConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
    )
    config = transformers.LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=IMAGE_TOKEN,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    return transformers.LlavaForConditionalGeneration(config).eval()


def test_hidden_states_are_what_the_lm_head_reads(transformers):
    model = tiny_llava(transformers)
    ids = torch.tensor([[0, 1] + [IMAGE_TOKEN] * 16 + [5, 6, 7], [1] + [IMAGE_TOKEN] * 16 + [5, 8, 9, 10]])
    mask = (ids != 0).long()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = hidden_states(model, ids, mask, pixels)
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels)
    torch.testing.assert_close(model.lm_head(got), out.logits)


def test_hidden_states_refuses_transformers_4(transformers, monkeypatch):
    model = tiny_llava(transformers)
    # Building a model can replace transformers' lazy module in sys.modules: patch the one there.
    monkeypatch.setattr(sys.modules["transformers"], "__version__", "4.49.0")
    with pytest.raises(RuntimeError, match="transformers >= 5, found 4.49.0"):
        hidden_states(model, torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))


def test_hidden_states_with_a_soft_prompt_and_lora(transformers, peft):
    model = tiny_llava(transformers)
    lora = peft.LoraConfig(
        r=2, target_modules=r".*language_model.*\.(q_proj|v_proj)", init_lora_weights=False
    )
    peft_model = peft.get_peft_model(model, lora)
    model = peft_model.get_base_model()
    prompt = SoftPrompt(2, 32, PLACEHOLDER)
    ids = torch.tensor([[1, 5, PLACEHOLDER, PLACEHOLDER, 6, 8]])
    mask = torch.ones_like(ids)
    got = hidden_states(model, ids, mask, soft_prompt=prompt)
    assert torch.equal(hidden_states(peft_model, ids, mask, soft_prompt=prompt), got)  # the peft model's base
    embeds = model.get_input_embeddings()(ids)
    embeds[0, 2:4] = prompt.embeddings
    want = model.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, want)
    without_lora = model.model.language_model.layers[0].self_attn.q_proj.base_layer
    assert without_lora.weight.requires_grad is False
    got.sum().backward()
    assert prompt.embeddings.grad.abs().sum() > 0


def test_peft_cannot_stack_prompt_tuning_on_lora(transformers, peft):
    """Why SoftPrompt exists (docs/lvlm.md): if a peft release lifts this, revisit the choice."""
    model = peft.get_peft_model(tiny_llava(transformers), peft.LoraConfig(r=2, target_modules=["q_proj"]))
    prompt_tuning = peft.PromptTuningConfig(task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=2)
    with pytest.raises(ValueError, match="different peft types"):
        model.add_adapter("soft", prompt_tuning)


# ---- the example ----------------------------------------------------------------------------

TINY_RUN = [
    "--batch-size",
    "4",
    "--train-scenes",
    "12",
    "--eval-scenes",
    "6",
    "--log-every",
    "1",
    "--seed",
    "1",
]


@pytest.fixture(scope="module")
def example(transformers, peft):
    pytest.importorskip("accelerate")
    return load_example("finetune_lvlm")


def test_example_trains_three_steps_and_saves_the_adapter(example, capsys, tmp_path):
    threads = torch.get_num_threads()
    result = example.main(TINY_RUN + ["--steps", "3", "--output-dir", str(tmp_path)])
    assert torch.get_num_threads() == threads

    logs = [entry for entry in result["trainer"].state.log_history if "loss" in entry]
    assert len(logs) == 3
    for entry in logs:
        assert all(math.isfinite(entry[k]) for k in ("loss", "contrastive_loss", "ntp_loss"))
        assert entry["loss"] == pytest.approx(entry["contrastive_loss"] + entry["ntp_loss"], rel=1e-5)
    for scores in (result["before"], result["after"]):
        assert set(scores) == {"image_to_text_r1", "text_to_image_r1"}
        assert all(0 <= v <= 1 for v in scores.values())
    printed = capsys.readouterr().out
    assert "before: image_to_text_r1" in printed and "after:  image_to_text_r1" in printed
    assert printed.count("'contrastive_loss'") == 3

    args = example.parse_args(TINY_RUN)
    model = result["trainer"].model
    before, after = example.build(args)[-1].state_dict(), model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert changed == trained  # every trainable tensor moved, nothing frozen did
    parts = {part for name in trained for part in name.split(".")}
    assert {"soft_prompt", "logit_scale", "lora_A", "lora_B", "multi_modal_projector"} <= parts
    assert not parts & {"vision_tower", "lm_head", "embed_tokens"}

    loaded = example.load_trained(str(tmp_path), args).state_dict()  # from the adapter in --output-dir
    assert all(torch.equal(loaded[name], after[name]) for name in trained)
