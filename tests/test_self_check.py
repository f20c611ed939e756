"""``python -m fsc_losses.check``: run as a user would (subprocess), on the CPU without and with
Triton's interpreter, and in-process against kernels made to fail."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fsc_losses import check

ROOT = Path(__file__).resolve().parents[1]
needs_cpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU's report")


def run_check(*args, interpret):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "fsc_losses.check", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@needs_cpu
def test_on_the_cpu_it_says_the_kernels_are_not_used_and_runs_the_reference():
    done = run_check(interpret=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for name in ("python", "torch", "triton", "open_clip", "transformers", "device"):
        assert re.search(rf"^{name} +\S", out, re.M), name
    assert "device        CPU (no CUDA device)" in out
    assert "the Triton kernels are not used on the CPU" in out
    assert "kernels:" not in out
    cases = re.findall(r"^\[(small|ViT-B/16): .*, (\w+)\]$", out, re.M)
    assert cases == [("small", "float32"), ("ViT-B/16", "float32")]
    assert out.count("auto picks: reference (tensors on cpu") == 2
    assert len(re.findall(r"^  reference: +\d+\.\d+ ms$", out, re.M)) == 2
    assert out.rstrip().endswith("all checks passed")


@needs_cpu
def test_under_the_interpreter_it_checks_the_kernels_at_the_small_shape():
    pytest.importorskip("triton")
    done = run_check("--quick", interpret=True)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "TRITON_INTERPRET='1'" in out and "under Triton's interpreter" in out
    assert re.findall(r"^\[(small): .*, (\w+)\]$", out, re.M) == [("small", "float32"), ("small", "float16")]
    kernel_lines = re.findall(r"^  kernels: .*$", out, re.M)
    assert len(kernel_lines) == 2 and all(line.endswith("-> ok") for line in kernel_lines)
    assert "ViT-B/16" not in out


@pytest.fixture
def kernels():
    """The kernel module, under the interpreter on the CPU (conftest sets it)."""
    pytest.importorskip("triton")
    from fsc_losses.kernels import local_hn

    return local_hn


def test_a_kernel_off_by_1e_4_fails_fp32_only(kernels, monkeypatch, capsys):
    original = kernels.local_hn_loss
    monkeypatch.setattr(kernels, "local_hn_loss", lambda *args: original(*args) * (1 + 1e-4))
    assert check.main(["--quick"]) == 1
    out = capsys.readouterr().out
    verdicts = re.findall(r"^\[small: .*, (\w+)\]\n.*\n  kernels: .* -> (\w+)$", out, re.M)
    assert verdicts[:2] == [("float32", "MISMATCH"), ("float16", "ok")]
    assert "check(s) FAILED" in out


def test_a_failing_kernel_fails_the_check(kernels, monkeypatch, capsys):
    def broken(*args):
        raise RuntimeError("out of resources: shared memory")

    monkeypatch.setattr(kernels, "local_hn_loss", broken)
    assert check.main(["--quick"]) == 1
    out = capsys.readouterr().out
    assert "kernels:   FAILED: RuntimeError: out of resources: shared memory" in out


def test_an_unsupported_shape_is_reported_not_failed(kernels, monkeypatch, capsys):
    monkeypatch.setattr(kernels, "unsupported_reason", lambda image, text: "width 12 (a test's limit)")
    assert check.main(["--quick"]) == 0
    assert "kernels:   not run: they do not support width 12 (a test's limit)" in capsys.readouterr().out


def test_a_non_finite_reference_fails_the_comparison():
    """A tolerance scaled by an infinite reference would allow any error: such a comparison fails."""
    exact = [
        torch.tensor(1.0, dtype=torch.float64),
        torch.tensor([[float("inf"), 1.0]]),
        torch.ones(2),
        torch.ones(()),
    ]
    got = [torch.tensor(1.0), torch.tensor([[1e30, 1.0]]), torch.ones(2), torch.ones(())]
    assert check.error_ratios(got, exact, torch.float16, torch.ones(())) == [0.0, float("inf"), 0.0, 0.0]
    exact[2] = torch.tensor([float("nan"), 1.0])
    assert check.error_ratios(got, exact, torch.float16, torch.ones(()))[2] == float("inf")
