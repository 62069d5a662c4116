"""`rep_edge` (RESR's RepConv): structure, a hand-computed edge branch, the border, its one change from `ecb`.

Exact fusion, deploy structure, gradients and `zero_output_()` are the registry-wide contract in
`test_blocks.py` (`pytest tests/search_space/test_blocks.py -k rep_edge`).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from search_space.blocks import get_block
from search_space.blocks import rep as rep_module
from search_space.blocks.base import zero_
from search_space.blocks.rep_edge import ExpandCompress, RepEdgeBlock

F64 = torch.float64
EXACT = 1e-9


def _randomize(block: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in block.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=F64) * 0.5)


def _x(channels: int, size: tuple[int, int], seed: int = 1) -> Tensor:
    return torch.randn(2, channels, *size, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_registered_with_the_expand_compress_path() -> None:
    block = get_block("rep_edge")(3, 5)
    assert isinstance(block, RepEdgeBlock) and block.name == "rep_edge"
    path = block.expand
    assert isinstance(path, ExpandCompress)
    # 1x1 expand to 2 * out (ECB's depth multiplier), 3x3 at that width, 1x1 compress back to out.
    assert (path.expand.in_channels, path.expand.out_channels, path.expand.kernel_size) == (3, 10, (1, 1))
    assert (path.conv.in_channels, path.conv.out_channels, path.conv.kernel_size) == (10, 10, (3, 3))
    assert (path.compress.in_channels, path.compress.out_channels, path.compress.kernel_size) == (10, 5, (1, 1))
    assert path.last is path.compress
    assert get_block("rep_edge")(4, 4, depth_multiplier=1.5).expand.expand.out_channels == 6
    assert [edge.kind for edge in block.edges] == ["sobel_x", "sobel_y", "laplacian"]
    bias_free = get_block("rep_edge")(3, 5, bias=False)
    assert not [name for name, _ in bias_free.named_parameters() if name.endswith("bias")]


def test_laplacian_branch_hand_computed() -> None:
    """Identity 1x1, scale 2, bias 0.5: `2 * laplacian(x) + 0.5` with zero padding, through the whole block."""
    block = get_block("rep_edge")(1, 1, bias=True, act="none").double()
    laplacian = block.edges[2]
    assert laplacian.kind == "laplacian"
    with torch.no_grad():
        zero_(block.conv3.weight, block.conv3.bias, block.expand.last.weight, block.expand.last.bias)
        for edge in block.edges[:2]:
            zero_(edge.scale, edge.bias)
        laplacian.conv.weight.fill_(1.0)
        laplacian.scale.fill_(2.0)
        laplacian.bias.fill_(0.5)
    x = torch.arange(1.0, 10.0, dtype=F64).view(1, 1, 3, 3)  # rows 1 2 3 / 4 5 6 / 7 8 9
    # up + down + left + right - 4 * centre, 0 outside: e.g. corner (0, 0) = 0 + 4 + 0 + 2 - 4 = 2,
    # centre (1, 1) = 2 + 8 + 4 + 6 - 20 = 0, corner (2, 2) = 6 + 0 + 8 + 0 - 36 = -22.
    lap = torch.tensor([[2.0, 1.0, -4.0], [-3.0, 0.0, -7.0], [-16.0, -11.0, -22.0]], dtype=F64)
    expected = (2.0 * lap + 0.5).view(1, 1, 3, 3)
    with torch.no_grad():
        assert torch.equal(laplacian(x), expected)
        assert torch.equal(block(x), expected)
        assert torch.allclose(block.fuse()(x), expected, atol=EXACT, rtol=0)


def test_only_branch_two_differs_from_ecb() -> None:
    """With the shared weights equal, `rep_edge - its branch 2 == ecb - its branch 2`."""
    edge_block = get_block("rep_edge")(3, 4, bias=True, act="none").double()
    ecb = get_block("ecb")(3, 4, bias=True, act="none").double()
    _randomize(edge_block, seed=2)
    ecb_state = ecb.state_dict()
    shared = {k: v for k, v in edge_block.state_dict().items() if not k.startswith("expand.")}
    assert set(shared) == {k for k in ecb_state if not k.startswith("expand.")}
    ecb.load_state_dict({**ecb_state, **shared})
    x = _x(3, (5, 6))
    with torch.no_grad():
        rest_edge = edge_block(x) - edge_block.expand(x)
        rest_ecb = ecb(x) - ecb.expand(x)
    assert torch.allclose(rest_edge, rest_ecb, atol=1e-12, rtol=0)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_expand_compress_path_fuses_exactly(bias: bool) -> None:
    path = ExpandCompress(3, 8, 5, bias=bias).double()
    _randomize(path, seed=3)
    weight, fused_bias = path.equivalent()
    assert weight.shape == (5, 3, 3, 3) and (fused_bias is None) == (not bias)
    x = _x(3, (7, 9))
    with torch.no_grad():
        error = (path(x) - F.conv2d(x, weight, fused_bias, padding=1)).abs().max().item()
    assert error <= EXACT


def test_zero_padded_intermediate_would_break_the_border(monkeypatch: pytest.MonkeyPatch) -> None:
    block = get_block("rep_edge")(4, 4, bias=True, act="none").double()
    _randomize(block, seed=4)
    x = _x(4, (7, 9))

    def error() -> Tensor:
        with torch.no_grad():
            return (block(x) - block.fuse()(x)).abs()

    assert error().max() <= EXACT
    monkeypatch.setattr(rep_module, "pad_with_bias", lambda t, b: F.pad(t, (1, 1, 1, 1)))
    wrong = error()
    assert wrong[..., 1:-1, 1:-1].max() <= EXACT  # the interior cannot tell
    assert wrong.max() > 1e-2  # the border ring can


def test_deploy_is_one_3x3_conv_with_far_fewer_parameters() -> None:
    block = get_block("rep_edge")(16, 16)
    fused = block.fuse()
    convs = [m for m in fused.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 and convs[0].kernel_size == (3, 3)
    assert sum(p.numel() for p in fused.parameters()) == 9 * 16 * 16 + 16
    # Training: 3x3 (2,320) + 16->32->32->16 path (544 + 9,248 + 528) + 3 edges (3 * (256 + 32)) = 13,504.
    assert sum(p.numel() for p in block.parameters()) == 13_504
