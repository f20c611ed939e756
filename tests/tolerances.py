"""Tolerances for results that two computations reach by adding the same terms in another order:
several processes against one, a sharded model against a whole one.

Such results are equal in exact arithmetic and differ by rounding, and the rounding of a sum is
set by the size of its terms, not of its result: an element near zero that came out of large terms
cancelling carries their error, and a gradient that is zero in exact arithmetic (a key projection's
bias, which softmax cancels) is nothing but that error. So the bound is set by the scale of what the
computation moves, the largest element of all the tensors compared together, and the tests compute
in float64, where reordering costs about ``eps64 * sqrt(n) * (terms' size)``.

Each bound below is far from the error a wrong result makes: one process's gradient off by 0.1%
moves the average by 5e-4 of its size.
"""

from collections.abc import Mapping

import torch

EPS32 = torch.finfo(torch.float32).eps  # 1.2e-7

# A float64 computation. eps64 = 2.2e-16: this leaves a factor of about 4.5e5 for the number of
# terms and for terms larger than the results, which reordered float64 sums in these tiny models
# do not approach (measured: 9e-16).
REORDERED_FLOAT64 = 1e-10

# A float64 computation whose result is rounded to float32 once or twice on the way, as the HF
# Trainer's logged loss is (it accumulates the loss in a float32 tensor and averages the processes'
# in float32): half an ulp per rounding, with room.
ROUNDED_TO_FLOAT32 = 4 * EPS32

# A float64 Llama, whose RMSNorm and rotary tables compute in float32 whatever the model's dtype
# (transformers casts to float32 there). The two sides pad a caption to different lengths, so its
# tokens sit at different absolute positions: the rotary angles, up to the sequence length L (75
# here) in radians, are rounded in float32 to within L * eps32 / 2, and every RMSNorm output to
# half an ulp. 128 eps32 (1.5e-5) is about 3x the rotary rounding; measured: 1.1 eps32 (and
# 7.5 eps32 with the whole model in float32, where an earlier per-element bound broke).
LLAMA_FLOAT32_PARTS = 128 * EPS32


def assert_close_to_scale(
    got: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor], rel: float = REORDERED_FLOAT64
) -> None:
    """The same keys, and for each ``max |got - want| <= rel * (max |want| over every tensor of
    want)``, with equal shapes and float64 on both sides (a float32 computation would have every
    bound above 5e8 times wider and must not slip in unnoticed)."""
    assert got.keys() == want.keys(), f"keys differ: {sorted(set(got) ^ set(want))}"
    scale = max((w.abs().max().item() for w in want.values() if w.numel()), default=0.0)
    for name, w in want.items():
        g = got[name]
        assert g.dtype == w.dtype == torch.float64, f"{name}: compared in {g.dtype} / {w.dtype}, not float64"
        assert g.shape == w.shape, f"{name}: shape {tuple(g.shape)} != {tuple(w.shape)}"
        error = (g - w).abs().max().item() if w.numel() else 0.0
        assert error <= rel * scale, f"{name}: max error {error:.3g} > {rel:g} x largest element {scale:.3g}"
