"""Backend selection of the public API: ``auto``, ``triton`` (here under Triton's interpreter) and
``reference`` give the same losses; unsupported inputs fall back to the reference with a warning."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from fsc_losses import FSCLoss, LocalHNLoss, SelectiveCalibratedReg, functional, local_hn_scores

pytest.importorskip("triton")
local_hn = pytest.importorskip("fsc_losses.kernels.local_hn")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
B, K, T, P, D = 3, 2, 6, 7, 8


def make_inputs(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B * (1 + K), T, generator=g) < 0.6
    mask[:, 1] = True
    inputs = dict(
        image_features=F.normalize(torch.randn(B, D, generator=g), dim=-1),
        text_features=F.normalize(torch.randn(B * (1 + K), D, generator=g), dim=-1),
        logit_scale=torch.tensor(20.0),
        image_tokens=torch.randn(B, P, D, generator=g),
        text_tokens=torch.randn(B * (1 + K), T, D, generator=g),  # flat, as trainers produce
        text_mask=mask,
        neg_valid=torch.tensor([[True, False], [True, True], [False, False]]),
    )
    return {
        k: (v.to(DEVICE, dtype) if v.is_floating_point() else v.to(DEVICE)).requires_grad_(
            v.is_floating_point()
        )
        for k, v in inputs.items()
    }


def grads_of(loss, inputs):
    names = [k for k, v in inputs.items() if v.requires_grad]
    return dict(
        zip(names, torch.autograd.grad(loss, [inputs[k] for k in names], allow_unused=True), strict=True)
    )


def count_calls(monkeypatch, name):
    """Count the calls of the kernel module's ``name``, so a test knows the kernels really ran."""
    calls = []
    original = getattr(local_hn, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(local_hn, name, counted)
    return calls


def test_fsc_loss_triton_equals_reference(monkeypatch):
    calls = count_calls(monkeypatch, "local_hn_loss")
    results = {}
    for backend in ("triton", "reference"):
        inputs = make_inputs()
        terms = FSCLoss(backend=backend)(**inputs, output_dict=True)
        total = sum(terms.values())
        results[backend] = (terms, grads_of(total * 1.7, inputs))
    assert calls == ["local_hn_loss"]  # the triton run only
    (terms_t, grads_t), (terms_r, grads_r) = results["triton"], results["reference"]
    for key in terms_r:
        torch.testing.assert_close(terms_t[key], terms_r[key], rtol=1e-5, atol=1e-6)
    for key, grad in grads_r.items():
        if grad is None:
            assert grads_t[key] is None
            continue
        torch.testing.assert_close(grads_t[key], grad, rtol=1e-4, atol=1e-5, msg=lambda m, k=key: f"{k}: {m}")


def test_custom_criterion_runs_on_kernel_scores(monkeypatch):
    calls = count_calls(monkeypatch, "local_hn_scores")
    inputs = make_inputs()
    local = {k: inputs[k] for k in ("image_tokens", "text_tokens", "text_mask", "logit_scale", "neg_valid")}

    def criterion(logits, neg_valid):  # not SCR: the module must hand it the (B, G) scores
        return SelectiveCalibratedReg(0.0, 0.0)(logits, neg_valid)

    kernel = LocalHNLoss(criterion=criterion, backend="triton")(**local)
    ref = LocalHNLoss(criterion=criterion, backend="reference")(**local)
    assert calls == ["local_hn_scores"]
    torch.testing.assert_close(kernel, ref, rtol=1e-5, atol=1e-6)
    scores = local_hn_scores(
        *[local[k] for k in ("image_tokens", "text_tokens", "text_mask", "logit_scale")], backend="triton"
    )
    assert scores.shape == (B, 1 + K)


@pytest.mark.skipif(DEVICE == "cuda", reason="auto picks the kernels on CUDA")
def test_auto_takes_the_reference_on_the_cpu(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the kernels must not run for CPU tensors under auto")

    monkeypatch.setattr(local_hn, "local_hn_loss", fail)
    inputs = make_inputs()
    FSCLoss(backend="auto")(**inputs)


def test_unsupported_inputs_fall_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(functional, "_warned", set())
    inputs = make_inputs(dtype=torch.float64)  # the kernels take fp32/fp16/bf16 only
    local = [inputs[k] for k in ("image_tokens", "text_tokens", "text_mask", "logit_scale")]
    with pytest.warns(UserWarning, match="using the reference"):
        value = LocalHNLoss(backend="triton")(*local)
    torch.testing.assert_close(value, LocalHNLoss(backend="reference")(*local), rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LocalHNLoss(backend="triton")(*local)  # the same reason warns once


def test_triton_backend_names_a_device_too_small_instead_of_launching(monkeypatch):
    monkeypatch.setattr(local_hn, "device_spec", lambda device: local_hn.DeviceSpec(1024))
    calls = count_calls(monkeypatch, "local_hn_loss")
    local = [make_inputs()[k] for k in ("image_tokens", "text_tokens", "text_mask", "logit_scale")]
    with pytest.raises(ValueError, match=r"backend='triton'.*\(3, 3, 6, 7, 8\).*allows 1024"):
        LocalHNLoss(backend="triton")(*local)
    assert not calls


def test_triton_backend_falls_back_for_other_reasons_on_a_device_too_small(monkeypatch):
    # float64 is unsupported whatever the device: that reason, not the shared memory, decides.
    monkeypatch.setattr(functional, "_warned", set())
    monkeypatch.setattr(local_hn, "device_spec", lambda device: local_hn.DeviceSpec(1024))
    inputs = make_inputs(dtype=torch.float64)
    local = [inputs[k] for k in ("image_tokens", "text_tokens", "text_mask", "logit_scale")]
    with pytest.warns(UserWarning, match="token dtypes.*using the reference"):
        value = LocalHNLoss(backend="triton")(*local)
    torch.testing.assert_close(value, LocalHNLoss(backend="reference")(*local), rtol=0, atol=0)


@pytest.mark.gpu
def test_auto_falls_back_on_a_device_too_small(monkeypatch):
    monkeypatch.setattr(functional, "_warned", set())
    monkeypatch.setattr(local_hn, "device_spec", lambda device: local_hn.DeviceSpec(1024))
    calls = count_calls(monkeypatch, "local_hn_loss")
    local = [make_inputs()[k] for k in ("image_tokens", "text_tokens", "text_mask", "logit_scale")]
    with pytest.warns(UserWarning, match="shared memory.*using the reference"):
        value = LocalHNLoss(backend="auto")(*local)
    assert not calls
    torch.testing.assert_close(value, LocalHNLoss(backend="reference")(*local))


def test_triton_backend_refuses_a_gpu_older_than_sm80(monkeypatch):
    """On sm_75 the kernels' dots compile without tensor cores, on sm_70 they spill: ``triton``
    names the compute capability instead of launching (``auto`` falls back: the GPU suite)."""
    local = [make_inputs()[k] for k in ("image_tokens", "text_tokens", "text_mask", "logit_scale")]
    calls = count_calls(monkeypatch, "local_hn_loss")
    for capability, refused in (((7, 5), True), ((7, 0), True), ((8, 0), False), ((9, 0), False)):
        spec = local_hn.DeviceSpec(1 << 30, capability)
        monkeypatch.setattr(local_hn, "device_spec", lambda device, spec=spec: spec)
        reason = local_hn.unsupported_reason(local[0], local[1])
        assert (reason is not None) == refused, capability
        if refused:
            assert f"compute capability {capability[0]}.{capability[1]}" in reason
            with pytest.raises(ValueError, match=rf"backend='triton'.*compute capability {capability[0]}\."):
                LocalHNLoss(backend="triton")(*local)
    assert not calls


def _with_empty_present_captions(inputs):
    """Image 0's negative 2 and image 1's true caption count no position, though present."""
    mask = inputs["text_mask"].detach().clone()  # flat: caption k of image b is row k * B + b
    mask[2 * B + 0] = False
    mask[0 * B + 1] = False
    return {k: v for k, v in dict(inputs, text_mask=mask).items() if k != "neg_valid"}


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_unchecked_empty_present_captions_act_as_missing(backend):
    """With the value check off, a present negative that counts no position is a missing one, and
    an image whose true caption counts none drops out of the mean: finite losses and gradients,
    equal to saying so in neg_valid, through LocalHNLoss (either criterion) and FSCLoss."""
    inputs = _with_empty_present_captions(make_inputs(seed=5))
    said = torch.ones(B, K, dtype=torch.bool, device=DEVICE)
    said[0, 1] = False  # negative 2 of image 0
    said[1] = False  # image 1: no contrast without its true caption
    local_names = ("image_tokens", "text_tokens", "text_mask", "logit_scale")
    losses = {
        "scr": lambda neg_valid, **inp: LocalHNLoss(backend=backend, check_inputs=False)(
            *[inp[k] for k in local_names], neg_valid
        ),
        "criterion": lambda neg_valid, **inp: LocalHNLoss(
            criterion=SelectiveCalibratedReg(), backend=backend, check_inputs=False
        )(*[inp[k] for k in local_names], neg_valid),
        "fsc": lambda neg_valid, **inp: FSCLoss(backend=backend, check_inputs=False)(
            **dict(inp, neg_valid=neg_valid), output_dict=True
        )["local_hn_loss"],
    }
    for name, loss_of in losses.items():
        unchecked = loss_of(None, **inputs)
        grads = grads_of(unchecked, inputs)
        assert torch.isfinite(unchecked), name
        assert all(g is None or torch.isfinite(g).all() for g in grads.values()), name
        told = loss_of(said, **inputs)
        torch.testing.assert_close(unchecked, told, rtol=1e-6, atol=0, msg=lambda m, n=name: f"{n}: {m}")
        for key, grad in grads_of(told, inputs).items():
            torch.testing.assert_close(
                grads[key], grad, rtol=1e-6, atol=1e-9, msg=lambda m, k=key: f"{k}: {m}"
            )
    with pytest.raises(ValueError, match="counts no position"):  # checked, it is an input error
        LocalHNLoss(backend=backend)(*[inputs[k] for k in local_names])


@pytest.mark.gpu
def test_auto_falls_back_on_a_gpu_older_than_sm80(monkeypatch):
    monkeypatch.setattr(functional, "_warned", set())
    monkeypatch.setattr(local_hn, "device_spec", lambda device: local_hn.DeviceSpec(1 << 30, (7, 5)))
    calls = count_calls(monkeypatch, "local_hn_loss")
    local = [make_inputs()[k] for k in ("image_tokens", "text_tokens", "text_mask", "logit_scale")]
    with pytest.warns(UserWarning, match=r"compute capability 7\.5.*using the reference"):
        value = LocalHNLoss(backend="auto")(*local)
    assert not calls
    torch.testing.assert_close(value, LocalHNLoss(backend="reference")(*local))


def recorded_allocations(monkeypatch):
    """Every buffer the kernels' host code allocates, in order."""
    buffers = []
    real = local_hn._empty

    def recording(shape, dtype, device, strides=None):
        buffers.append(real(shape, dtype, device, strides))
        return buffers[-1]

    monkeypatch.setattr(local_hn, "_empty", recording)
    return buffers


def test_flat_captions_get_their_gradient_without_a_copy(monkeypatch):
    """Flat (G*B, T, D) text tokens reach the kernels as a grouped view; the text gradient is
    allocated with that view's strides, so autograd hands the flat leaf the kernels' buffer itself
    (v3 allocated it contiguous in the grouped layout: a full copy of it came back)."""
    buffers = recorded_allocations(monkeypatch)
    inputs = make_inputs()
    local = [inputs[k] for k in ("image_tokens", "text_tokens", "text_mask", "logit_scale")]
    loss = LocalHNLoss(backend="triton")(*local, inputs["neg_valid"])
    buffers.clear()
    d_image, d_text = torch.autograd.grad(loss, local[:2])
    (kernel_text,) = [b for b in buffers if b.dim() == 4]
    assert d_text.shape == (B * (1 + K), T, D) and d_text.is_contiguous()
    assert d_text.data_ptr() == kernel_text.data_ptr()
    (kernel_image,) = [b for b in buffers if b.shape == (B, P, D)]
    assert d_image.data_ptr() == kernel_image.data_ptr()


def test_the_value_check_sizes_the_kernels_buffers_by_the_counted_rows(monkeypatch):
    """With the check on, its one synchronisation also reads the most positions an image counts,
    and the saved weights hold that many rows (rounded up to 16), not G*T; results are bitwise
    those of buffers sized for every position (the check off)."""
    buffers = recorded_allocations(monkeypatch)
    inputs = make_inputs(seed=3)
    local = [inputs[k] for k in ("image_tokens", "text_tokens", "text_mask", "logit_scale")]
    results = {}
    for check_inputs in (True, False):
        buffers.clear()
        loss = LocalHNLoss(backend="triton", check_inputs=check_inputs)(*local, inputs["neg_valid"])
        results[check_inputs] = (loss, *torch.autograd.grad(loss, local[:2]))
        weights = next(b for b in buffers if b.dim() == 3 and b.dtype == torch.float32 and b.shape[0] == B)
        results[check_inputs] += (weights.shape[1],)
    grouped = inputs["text_mask"].view(1 + K, B, T).transpose(0, 1)
    present = torch.cat([torch.ones(B, 1, dtype=torch.bool), inputs["neg_valid"].cpu()], 1)
    most = int((grouped.cpu() & present[..., None]).sum((1, 2)).max())
    assert results[True][-1] == -(-most // 16) * 16 < results[False][-1] == -(-(1 + K) * T // 16) * 16
    for checked, unchecked in zip(results[True][:-1], results[False][:-1], strict=True):
        assert torch.equal(checked, unchecked)
