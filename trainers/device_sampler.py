"""Patch batches cut on the training device, so that a GPU never waits for data.

On CUDA, building each batch with numpy and copying it host -> device every step can starve a small
network. Here the training images (HR and every QP's LR, uint8) are copied to the device once per
(`PairedSet`, device) and kept there (`device_images`, a weak cache: the copy lives as long as the
set, and every stage, trainer and trial of a worker process reuses it). Each batch is then one
gather from those buffers: the random choices come from the same `PatchSampler.indices` as the CPU
path, and the crop + flip/rotation is an index table built by applying `PatchSampler.dihedral` to a
grid of coordinates, so the same seed gives bit-identical batches on every device (uint8 -> float
goes through a 256-entry table computed on the CPU, so not even the division can differ).

`patch_sampler` picks the path: numpy on CPU, the device path elsewhere, and numpy again, with a
`DataWarning`, when the images would take more than `DEVICE_DATA_SHARE` of the GPU's free memory
(e.g. a full DIV2K on a small card).
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from trainers.data import SCALE, PairedSet, PatchSampler, QPSampling
from trainers.imageio import DataWarning

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["DEVICE_DATA_SHARE", "DeviceImages", "DevicePatchSampler", "device_images", "patch_sampler"]

DEVICE_DATA_SHARE = 0.5
"""The training images go to a CUDA device only if they take at most this share of its free memory."""


@dataclass(frozen=True, eq=False)
class DeviceImages:
    """A `PairedSet`'s images as flat uint8 buffers on one device, with where each image starts.

    ``hr`` holds every HR image (HxWx3, row-major) one after the other, ``lr`` every LR image of every
    QP; ``hr_start[k]`` and ``lr_start[q, k]`` (q: index into ``qps``) are their first elements and
    ``lr_width[k]`` the LR width of image k (the HR width is 4x)."""

    device: torch.device
    qps: tuple[int, ...]
    hr: torch.Tensor
    lr: torch.Tensor
    hr_start: torch.Tensor
    lr_start: torch.Tensor
    lr_width: torch.Tensor

    @staticmethod
    def nbytes(pairs: PairedSet) -> int:
        """Bytes the device copy of ``pairs`` takes."""
        return sum(h.size for h in pairs.hr) + sum(a.size for qp in pairs.qps for a in pairs.lr[qp])

    @classmethod
    def copy(cls, pairs: PairedSet, device: torch.device) -> DeviceImages:
        """Copy ``pairs`` to ``device``, one image at a time (no second host copy of a large set)."""
        qps = pairs.qps
        hr, hr_start = _flat_copy(pairs.hr, device)
        lr, lr_start = _flat_copy([a for qp in qps for a in pairs.lr[qp]], device)
        widths = [a.shape[1] for a in pairs.lr[qps[0]]]
        return cls(
            device=device,
            qps=qps,
            hr=hr,
            lr=lr,
            hr_start=hr_start.to(device),
            lr_start=lr_start.reshape(len(qps), len(pairs)).to(device),
            lr_width=torch.tensor(widths, dtype=torch.int64, device=device),
        )


def _flat_copy(images: Sequence[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    sizes = [a.size for a in images]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    flat = torch.empty(sum(sizes), dtype=torch.uint8, device=device)
    for image, start, size in zip(images, starts, sizes):
        with warnings.catch_warnings():
            # The arrays are read-only on purpose; torch warns about that, but they are only read here.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            src = torch.from_numpy(np.ascontiguousarray(image).reshape(-1))
        flat[int(start) : int(start) + size].copy_(src)
    return flat, torch.from_numpy(starts)


_CACHE: weakref.WeakKeyDictionary[PairedSet, dict[torch.device, DeviceImages | None]] = weakref.WeakKeyDictionary()


def _canonical(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())  # "cuda" and "cuda:0" are one copy
    return device


def _fits(pairs: PairedSet, device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return DeviceImages.nbytes(pairs) <= DEVICE_DATA_SHARE * free


def device_images(pairs: PairedSet, device: torch.device | str) -> DeviceImages | None:
    """The device copy of ``pairs`` (made on first use, then shared), or None if it does not fit."""
    device = _canonical(device)
    per_device = _CACHE.setdefault(pairs, {})
    if device not in per_device:
        if _fits(pairs, device):
            per_device[device] = DeviceImages.copy(pairs, device)
        else:
            per_device[device] = None
            warnings.warn(
                f"{pairs.source} [{pairs.split}]: the training images ({DeviceImages.nbytes(pairs) / 2**30:.2f} GiB) would take "
                f"more than {DEVICE_DATA_SHARE:.0%} of {device}'s free memory; patches are cut on the CPU and copied each "
                "step instead (slower for small networks)",
                DataWarning,
                stacklevel=3,
            )
    return per_device[device]


class DevicePatchSampler(PatchSampler):
    """`PatchSampler` whose batches are cut from `DeviceImages` on the device: same choices, same values."""

    def __init__(
        self,
        pairs: PairedSet,
        *,
        images: DeviceImages,
        patch: int,
        batch: int,
        qp_sampling: QPSampling | str,
        seed: int,
        augment: bool = True,
    ) -> None:
        super().__init__(pairs, patch=patch, batch=batch, qp_sampling=qp_sampling, seed=seed, augment=augment)
        if images.qps != pairs.qps:
            raise ValueError(f"device images hold QPs {list(images.qps)}, the set has {list(pairs.qps)}")
        self.images = images
        self.device = images.device
        self._qps = np.array(images.qps, dtype=np.int64)
        self._lr_table = self._coordinate_table(patch)
        self._hr_table = self._coordinate_table(SCALE * patch)
        self._channels = torch.arange(3, dtype=torch.int64, device=self.device).view(1, 3, 1, 1)
        # The CPU path's exact uint8 -> float32 values (one table, so no device rounds differently).
        self._to_float = torch.arange(256, dtype=torch.uint8).float().div_(255.0).to(self.device)

    def _coordinate_table(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For each dihedral op, the (row, col) in the crop that output pixel (i, j) comes from: 2 x 8xnxn."""
        grid = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), axis=-1)  # n x n x (row, col)
        table = np.stack([self.dihedral(grid, op) for op in range(8)])  # 8 x n x n x 2
        table = torch.from_numpy(np.ascontiguousarray(table, dtype=np.int64)).to(self.device)
        return table[..., 0].contiguous(), table[..., 1].contiguous()

    def _cut(self, flat: torch.Tensor, start: torch.Tensor, width: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
             op: torch.Tensor, table: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Bx3xnxn float32 patches: crop at (y, x) of images of ``width`` starting at ``start``, transformed by ``op``."""
        rows, cols = table
        b = (slice(None), None, None)
        pixel = start[b] + ((rows[op] + y[b]) * width[b] + (cols[op] + x[b])) * 3  # B x n x n, HWC element index
        return self._to_float[flat[pixel.unsqueeze(1) + self._channels].long()]

    def batch(self, step: int, total_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(lr, hr, qps)`` on the device, equal to `PatchSampler.batch` of the same sampler."""
        ch = self.indices(step, total_steps)
        q_index = np.searchsorted(self._qps, ch["qp"])
        host = torch.from_numpy(np.stack([ch["image"], q_index, ch["y"], ch["x"], ch["op"], ch["qp"]]).astype(np.int64))
        image, q_index, y, x, op, qp = host.to(self.device).unbind(0)  # one small copy per step
        d = self.images
        width = d.lr_width[image]
        lr = self._cut(d.lr, d.lr_start[q_index, image], width, y, x, op, self._lr_table)
        hr = self._cut(d.hr, d.hr_start[image], SCALE * width, SCALE * y, SCALE * x, op, self._hr_table)
        return lr, hr, qp


def patch_sampler(
    pairs: PairedSet,
    *,
    device: torch.device | str,
    patch: int,
    batch: int,
    qp_sampling: QPSampling | str,
    seed: int,
    augment: bool = True,
) -> PatchSampler:
    """The sampler for training on ``device``: numpy on CPU, `DevicePatchSampler` where the images fit."""
    kwargs = dict(patch=patch, batch=batch, qp_sampling=qp_sampling, seed=seed, augment=augment)
    images = device_images(pairs, device) if _cut_on_device(torch.device(device)) else None
    if images is None:
        return PatchSampler(pairs, **kwargs)
    return DevicePatchSampler(pairs, images=images, **kwargs)


def _cut_on_device(device: torch.device) -> bool:
    """Whether batches for ``device`` are cut there (tests force it for the CPU)."""
    return device.type != "cpu"
