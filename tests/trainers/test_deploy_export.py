"""ONNX and torch.export files of the deploy network compute what the torch deploy model computes.

Contract tests over every registered block, every preset and every anchor kind, on builtin val
images (real photos and renders, Lanczos-downscaled like an LR input) cropped small for speed. Zero
initialised tensors (the last learned layer, empty fitted anchors) are filled with noise first: a
network whose output is its anchor alone would hide a wrong body.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch
from torch import nn

from search_space.arch import GLOBAL_RESIDUALS
from search_space.blocks import get_block, list_blocks
from search_space.errors import UserError
from search_space.network import build, deploy
from search_space.presets import get_preset, list_presets
from trainers.deploy_export import DEPLOY_INPUT, TOLERANCE_255, export_onnx, export_program, fixed_size_reason, real_inputs, require_onnx

pytest.importorskip("onnxruntime", reason='the deploy extra is not installed (pip install -e ".[deploy]")')
import onnxruntime  # noqa: E402

#: LR crops (h, w), divisible by every down factor (1..4): two sizes, so size-generic graphs are checked as such.
SIZES = ((24, 36), (12, 48))


def _inputs(down_factor: int, *, fixed: bool) -> list[torch.Tensor]:
    images = real_inputs(multiple=down_factor, count=2)
    sizes = SIZES[:1] * 2 if fixed else SIZES
    return [img[..., :h, :w].contiguous() for img, (h, w) in zip(images, sizes)]


def _fill_zeros(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
        for name, b in model.named_buffers():
            if b.is_floating_point() and b.numel() > 1 and not b.any():
                b.copy_(torch.randn(b.shape, generator=generator) * 0.05)
    return model.eval()


def _ort(path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _check(model: nn.Module, down_factor: int, tmp_path) -> None:
    """Export, then compare ORT (re-loaded from disk) with torch on the real crops, independently of the export's own check."""
    fixed = fixed_size_reason(model) is not None
    inputs = _inputs(down_factor, fixed=fixed)
    size = tuple(inputs[0].shape[-2:]) if fixed else None
    record = export_onnx(model, tmp_path / "m.onnx", down_factor=down_factor, input_size=size, inputs=inputs)
    assert record.fixed_size == size and record.max_diff_255 <= TOLERANCE_255
    session = _ort(record.path)
    with torch.no_grad():
        for x in inputs:
            expected = model(x).numpy()
            assert np.abs(expected).max() > 1e-3  # the comparison is not between two zero images
            got = session.run(None, {"lr": x.numpy()})[0]
            assert np.abs(got - expected).max() * 255 <= TOLERANCE_255


@pytest.mark.slow  # one export (about 1 s) per block; the fast subset keeps the SAFM++ and mismatch cases
@pytest.mark.parametrize("name", list_blocks())
def test_every_block_exports_to_onnx_and_matches_onnx_runtime(name, tmp_path):
    torch.manual_seed(0)
    block = get_block(name)(4, 4, bias=True, act="relu")
    model = _fill_zeros(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), block.fuse(), nn.Conv2d(4, 3, 1)))
    _check(model, 1, tmp_path)


@pytest.mark.slow  # 17 exports, about 1 s each on 2 cores
@pytest.mark.parametrize("name", list_presets())
def test_every_preset_exports_to_onnx_and_matches_onnx_runtime(name, tmp_path):
    torch.manual_seed(0)
    arch = get_preset(name).arch
    _check(_fill_zeros(deploy(build(arch))), arch.down_factor, tmp_path)


@pytest.mark.slow  # one export (about 1 s) per anchor kind
@pytest.mark.parametrize("anchor", GLOBAL_RESIDUALS)
def test_every_anchor_exports_to_onnx_and_matches_onnx_runtime(anchor, tmp_path):
    torch.manual_seed(0)
    arch = dataclasses.replace(get_preset("reptcn").arch, global_residual=anchor)
    _check(_fill_zeros(deploy(build(arch))), arch.down_factor, tmp_path)


def test_safmpp_is_exported_for_one_size_and_says_so(tmp_path):
    model = _fill_zeros(deploy(build(get_preset("vpeg_s").arch)))
    assert "one input size" in (fixed_size_reason(model) or "")
    inputs = _inputs(1, fixed=True)
    record = export_onnx(model, tmp_path / "s.onnx", down_factor=1, input_size=(24, 36), inputs=inputs)
    assert record.fixed_size == (24, 36) and "fixed input 36x24" in record.describe()
    with pytest.raises(Exception, match="dimensions"):  # the graph really is fixed-size: ORT refuses another
        _ort(record.path).run(None, {"lr": np.zeros((1, 3, 48, 48), np.float32)})


@pytest.mark.parametrize("size", [(35, 50), pytest.param((DEPLOY_INPUT[0], 100), marks=pytest.mark.slow)], ids=["35x50", "540x100"])
def test_safmpp_exports_where_pool_windows_are_uneven(size, tmp_path):
    """35 rows pool to 4 windows of 9 or 10 rows, the challenge's 540 rows to 67 windows of 9 or 10, and
    50 / 100 columns to 6 / 12 overlapping windows of 9: sizes where torch's ONNX exporter has no
    adaptive max pool (it refused vpeg_s at 540p before). The full 960x540 export runs in
    benchmarks/latency_runtimes.py."""
    model = _fill_zeros(deploy(build(get_preset("vpeg_s").arch)))
    inputs = real_inputs(multiple=1, size=size, count=1)
    record = export_onnx(model, tmp_path / "s.onnx", down_factor=1, input_size=size, inputs=inputs)
    with torch.no_grad():
        expected = model(inputs[0]).numpy()
    got = _ort(record.path).run(None, {"lr": inputs[0].numpy()})[0]
    assert np.abs(got - expected).max() * 255 <= TOLERANCE_255


def test_a_mismatching_export_is_not_written(tmp_path, monkeypatch):
    """The check runs before the write: a graph that computes something else leaves no file."""
    model = _fill_zeros(deploy(build(get_preset("reptcn").arch)))
    inputs = _inputs(1, fixed=False)
    real_forward = model.forward
    exported = []

    def forward(x):  # export sees the true network; the reference run afterwards sees a shifted one
        return real_forward(x) + (0.1 if exported else 0.0)

    original = torch.onnx.export

    def export(*args, **kwargs):
        result = original(*args, **kwargs)
        exported.append(True)
        return result

    monkeypatch.setattr(model, "forward", forward)
    monkeypatch.setattr(torch.onnx, "export", export)
    with pytest.raises(RuntimeError, match="not written"):
        export_onnx(model, tmp_path / "bad.onnx", down_factor=1, inputs=inputs)
    assert not (tmp_path / "bad.onnx").exists()


def test_program_export_runs_at_other_sizes(tmp_path):
    arch = get_preset("casr").arch
    model = _fill_zeros(deploy(build(arch)))
    record = export_program(model, tmp_path / "m.pt2", down_factor=arch.down_factor, inputs=_inputs(arch.down_factor, fixed=False))
    program = torch.export.load(str(record.path)).module()
    x = torch.rand(2, 3, 30, 21)  # a batch, and a size divisible by 3 that the export and its check never saw
    with torch.no_grad():
        assert torch.allclose(program(x), model(x), atol=1e-5)


def test_missing_extra_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError) as info:
        require_onnx()
    message = str(info.value)
    assert "\n" not in message and 'pip install -e ".[deploy]"' in message and "onnxruntime" in message


def test_a_full_run_without_the_extra_writes_the_program_and_says_why_no_onnx(tmp_path, monkeypatch):
    import trainers.deploy_export as deploy_export
    from trainers.full import _export_deploy_files

    monkeypatch.setattr(deploy_export, "onnx_available", lambda: False)
    lines: list[str] = []
    model = _fill_zeros(deploy(build(get_preset("reptcn").arch)))
    assert _export_deploy_files(model, 1, tmp_path, lines.append) == [tmp_path / "deploy.pt2"]
    assert not (tmp_path / "deploy.onnx").exists()
    assert any("deploy.onnx not written" in line and 'pip install -e ".[deploy]"' in line for line in lines)
