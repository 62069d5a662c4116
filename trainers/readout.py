"""A closed-form readout for evaluation: refit the deploy model's last conv by weighted ridge regression.

Why (issue 20, item 3): at proxy budgets the last layer is where training noise shows most. A
zero-initialised tail that Adam moves by about the learning rate per weight in its first steps can
put a design below its own anchor, and a few hundred steps do not settle it; how good a design's
*features* are is hidden behind how far its readout got. Given the features, the best last conv is
a linear least-squares problem, so it can be solved exactly instead of waited for (the idea of
FEAR, Dey et al. 2021: rank after a short refit of the head on frozen features).

What is solved: the deploy model's last conv W (the one before the final pixel-shuffle: the direct
reconstruction's conv, or the cascade/shuffle reconstruction's conv to 48 channels) is refit on
training patches to minimise sum_i w_i |PS(W * z_i) + anchor(x_i) - hr_i|^2, z_i the conv's input
(computed by the model itself), with the per-(image, QP) weights 1 / Lanczos MSE-Y of the linear
baseline (so it targets the mean per-image PSNR-Y, as the baseline does) and a small ridge. The
conv's padding is the model's (zeros), so border pixels are modelled as the network computes them;
a bias-free network stays bias-free. Starting points: W = 0 (a design at step 0) is a feasible
solution, so on the fitting patches the refit can never be worse than the trained tail or the
anchor alone.

For evaluation only: the refit model is scored, the trained weights are what training (and a
promotion) continues from. Networks whose last stage is not one conv + pixel-shuffle (ETDS's dual
stream) are returned unchanged (`refit_readout` says so with None).
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainers.data import PairedSet, PatchSampler

__all__ = ["READOUT_RIDGE", "ReadoutFit", "last_conv", "refit_readout"]

READOUT_RIDGE = 1e-4
"""Ridge on the diagonal of ``Z^T Z``, relative to its mean diagonal. Small: only to keep the solve
well posed when features are collinear (dead ReLU channels, a zero body)."""
_PATCH = 48  # LR patch side: divisible by every down factor 1-4, as the proxy recipes' patches
_BATCH = 8
_SEED = 7_777_777  # the readout's patches are not the training batches of any seed


@dataclass(frozen=True)
class ReadoutFit:
    """What was refit: ``pixels`` LR pixels of ``patches`` patches; the training-patch weighted MSE of
    the trained tail and of the refit one (on the 0-1 scale, per HR value)."""

    patches: int
    pixels: int
    mse_trained: float
    mse_refit: float


def last_conv(model: nn.Module) -> tuple[nn.Conv2d, int] | None:
    """The deploy model's last conv and the pixel-shuffle factor after it, or None if there is none."""
    recon = getattr(model, "recon", None)
    if recon is None:
        return None
    direct = hasattr(recon, "conv")
    conv = recon.conv if direct else getattr(recon, "to_hr", None)
    shuffle = getattr(recon, "shuffle", None) if direct else getattr(recon, "shuffle_hr", None)
    if isinstance(conv, nn.Sequential) and len(conv) == 2 and isinstance(conv[1], nn.Identity):
        conv = conv[0]  # a fused block without activation: (conv, identity)
    if not isinstance(conv, nn.Conv2d) or not isinstance(shuffle, nn.PixelShuffle) or conv.groups != 1:
        return None
    return conv, int(shuffle.upscale_factor)


_WEIGHTS: weakref.WeakKeyDictionary[PairedSet, dict[tuple[int, int], float]] = weakref.WeakKeyDictionary()


def _pair_weights(train: PairedSet) -> dict[tuple[int, int], float]:
    """``{(image, qp): weight}``: 1 / Lanczos MSE-Y over all pairs, mean 1 (the linear baseline's)."""
    cached = _WEIGHTS.get(train)
    if cached is None:
        from trainers.linear_baseline import lanczos_weights

        keys = [(i, qp) for qp in train.qps for i in range(len(train))]
        weights = lanczos_weights([train.lr[qp][i] for i, qp in keys], [train.hr[i] for i, _ in keys])
        cached = _WEIGHTS[train] = dict(zip(keys, (float(w) for w in weights)))
    return cached


@torch.no_grad()
def refit_readout(
    model: nn.Module, train: PairedSet, *, batches: int = 16, ridge: float = READOUT_RIDGE, augment: bool = True
) -> tuple[nn.Module, ReadoutFit | None]:
    """A copy of the deploy ``model`` with its last conv refit on ``batches`` x 8 training patches
    (flipped and rotated like training patches unless ``augment`` is false).

    Float64 throughout (features and normal equations); the model itself is not modified. Returns
    ``(model, None)`` unchanged when its last stage is not a conv + pixel-shuffle.
    """
    found = last_conv(model)
    if found is None:
        return model, None
    net = copy.deepcopy(model).double().eval()
    conv, factor = last_conv(net)
    k = conv.kernel_size[0]
    pad = conv.padding if isinstance(conv.padding, tuple) else (conv.padding, conv.padding)
    if conv.padding_mode != "zeros" or conv.stride != (1, 1) or conv.kernel_size[0] != conv.kernel_size[1]:
        return model, None
    captured: list[torch.Tensor] = []
    hook = conv.register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
    sampler = PatchSampler(train, patch=_PATCH, batch=_BATCH, qp_sampling="uniform", seed=_SEED, augment=augment)
    weights = _pair_weights(train)
    bias = conv.bias is not None
    n_feat = conv.in_channels * k * k + int(bias)
    ztz = torch.zeros(n_feat, n_feat, dtype=torch.float64)
    zty = torch.zeros(n_feat, conv.out_channels, dtype=torch.float64)
    trained_err, total_w, pixels = 0.0, 0.0, 0
    try:
        for step in range(batches):
            lr, hr, _ = sampler.batch(step, batches)
            chosen = sampler.indices(step, batches)
            lr, hr = lr.double(), hr.double()
            captured.clear()
            out = net(lr)
            z = captured[0]
            residual = hr - (out - F.pixel_shuffle(conv(z), factor))  # what the last conv's output must make
            target = F.pixel_unshuffle(residual, factor)  # B x Cout x h x w
            cols = F.unfold(z, k, padding=pad)  # B x (Cin k k) x (h w)
            for b in range(lr.shape[0]):
                w = weights[(int(chosen["image"][b]), int(chosen["qp"][b]))]
                x = cols[b].T
                if bias:
                    x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
                y = target[b].reshape(conv.out_channels, -1).T
                ztz += w * (x.T @ x)
                zty += w * (x.T @ y)
                trained_err += w * float(((hr[b] - out[b]) ** 2).mean())
                total_w += w
                pixels += x.shape[0]
    finally:
        hook.remove()
    scale = float(torch.diagonal(ztz).mean())
    if not np.isfinite(scale) or scale <= 0:
        return model, None
    solution = torch.linalg.solve(ztz + ridge * scale * torch.eye(n_feat, dtype=torch.float64), zty)
    conv.weight.copy_(solution[: n_feat - int(bias)].T.reshape(conv.weight.shape))
    if bias:
        conv.bias.copy_(solution[-1])
    refit_err = 0.0
    for step in range(batches):  # the same patches, scored with the refit tail
        lr, hr, _ = sampler.batch(step, batches)
        chosen = sampler.indices(step, batches)
        out = net(lr.double())
        for b in range(lr.shape[0]):
            w = weights[(int(chosen["image"][b]), int(chosen["qp"][b]))]
            refit_err += w * float(((hr[b].double() - out[b]) ** 2).mean())
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    fit = ReadoutFit(patches=batches * _BATCH, pixels=pixels, mse_trained=trained_err / total_w, mse_refit=refit_err / total_w)
    return net.to(dtype), fit

