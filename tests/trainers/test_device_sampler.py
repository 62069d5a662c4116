"""trainers.device_sampler: batches cut on the device equal the numpy sampler's, bit for bit.

There is no GPU in CI, so the device path runs on ``torch.device("cpu")`` tensors: the same torch
code a GPU runs, checked against `PatchSampler.batch` for many steps, QP samplings and augmentations.
The fake LR is the exact 4x4 box mean of the HR (plus a QP offset), as in test_data.py, so the HR/LR
alignment can be checked pixel for pixel.
"""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
import torch

from trainers import device_sampler as ds
from trainers.data import PairedSet, PatchSampler
from trainers.imageio import DataWarning

QPS = (31, 39, 47, 55, 63)
CPU = torch.device("cpu")


def box4(hr: np.ndarray) -> np.ndarray:
    h, w, c = hr.shape
    return np.rint(hr.reshape(h // 4, 4, w // 4, 4, c).astype(np.float64).mean(axis=(1, 3))).astype(np.uint8)


def fake_lr(hr: np.ndarray, qp: int) -> np.ndarray:
    return np.clip(box4(hr).astype(int) + (qp - 31) // 8, 0, 255).astype(np.uint8)


def make_pairs(sizes=((64, 96), (80, 64), (48, 48), (32, 128)), qps=QPS, seed=0) -> PairedSet:
    rng = np.random.default_rng(seed)
    hrs = []
    for h, w in sizes:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img.setflags(write=False)  # as load_split leaves them
        hrs.append(img)
    lr = {q: tuple(fake_lr(h, q) for h in hrs) for q in qps}
    return PairedSet(names=tuple(f"img{i}" for i in range(len(hrs))), hr=tuple(hrs), lr=lr, spec=None,
                     source="memory", split="train")


def samplers(pairs: PairedSet, **kwargs) -> tuple[PatchSampler, ds.DevicePatchSampler]:
    images = ds.device_images(pairs, CPU)
    return PatchSampler(pairs, **kwargs), ds.DevicePatchSampler(pairs, images=images, **kwargs)


@pytest.mark.parametrize("qp_sampling", ["uniform", "fixed:39", "fixed:31,63", "curriculum"])
@pytest.mark.parametrize("augment", [True, False])
def test_device_batches_equal_numpy_batches(qp_sampling, augment):
    pairs = make_pairs()
    numpy_path, device_path = samplers(pairs, patch=8, batch=12, qp_sampling=qp_sampling, seed=4, augment=augment)
    ops = set()
    for step in range(10):
        expected, got = numpy_path.batch(step, 10), device_path.batch(step, 10)
        for e, g in zip(expected, got):
            assert e.dtype == g.dtype and e.shape == g.shape
            assert torch.equal(e, g), f"step {step}"
        ops |= set(device_path.indices(step, 10)["op"].tolist())
    assert ops == (set(range(8)) if augment else {0})


@pytest.mark.parametrize("patch", [1, 5, 12])
def test_device_batches_equal_numpy_batches_at_other_patch_sizes(patch):
    pairs = make_pairs(sizes=((48, 48), (96, 64)))
    numpy_path, device_path = samplers(pairs, patch=patch, batch=7, qp_sampling="uniform", seed=1)
    for step in (0, 3, 1000):
        assert all(torch.equal(e, g) for e, g in zip(numpy_path.batch(step, 50), device_path.batch(step, 50)))


def test_device_sampler_skips_images_the_patch_does_not_fit_like_numpy():
    pairs = make_pairs()  # img2 is LR 12x12, img3 is LR 8x32
    with pytest.warns(DataWarning):
        numpy_path, device_path = samplers(pairs, patch=10, batch=16, qp_sampling="uniform", seed=2)
    for step in range(5):
        assert all(torch.equal(e, g) for e, g in zip(numpy_path.batch(step, 5), device_path.batch(step, 5)))


def test_hr_patch_is_the_4x_region_of_the_lr_patch():
    pairs = make_pairs()
    _, sampler = samplers(pairs, patch=8, batch=16, qp_sampling="uniform", seed=9)
    for step in range(6):
        lr, hr, qps = sampler.batch(step, 6)
        lr8 = np.rint(lr.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
        hr8 = np.rint(hr.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
        ch = sampler.indices(step, 6)
        for i in range(16):
            k, y, x, op = (int(ch[key][i]) for key in ("image", "y", "x", "op"))
            q = int(qps[i])
            np.testing.assert_array_equal(lr8[i], fake_lr(hr8[i], q))  # the degradation of its own HR patch
            region = pairs.hr[k][4 * y : 4 * y + 32, 4 * x : 4 * x + 32]
            np.testing.assert_array_equal(hr8[i], PatchSampler.dihedral(region, op))


def test_device_copy_is_made_once_per_set_and_device_and_dropped_with_the_set():
    pairs = make_pairs()
    first = ds.device_images(pairs, CPU)
    assert ds.device_images(pairs, "cpu") is first
    a, b = samplers(pairs, patch=4, batch=2, qp_sampling="uniform", seed=0)[1], samplers(pairs, patch=8, batch=3, qp_sampling="curriculum", seed=1)[1]
    assert a.images is b.images is first
    assert first.hr.dtype == torch.uint8 and first.hr.numel() + first.lr.numel() == ds.DeviceImages.nbytes(pairs)
    other = make_pairs(seed=1)
    assert ds.device_images(other, CPU) is not first
    entries = len(ds._CACHE)
    del pairs, a, b
    gc.collect()
    assert len(ds._CACHE) == entries - 1


def test_patch_sampler_picks_the_path(monkeypatch):
    pairs = make_pairs()
    plain = ds.patch_sampler(pairs, device="cpu", patch=8, batch=2, qp_sampling="uniform", seed=0)
    assert type(plain) is PatchSampler  # CPU training: numpy, no second copy of the images
    monkeypatch.setattr(ds, "_cut_on_device", lambda device: True)
    on_device = ds.patch_sampler(pairs, device="cpu", patch=8, batch=2, qp_sampling="uniform", seed=0)
    assert isinstance(on_device, ds.DevicePatchSampler)
    assert all(torch.equal(e, g) for e, g in zip(plain.batch(3, 9), on_device.batch(3, 9)))


def test_images_too_large_for_the_gpu_stay_on_the_host(monkeypatch):
    pairs = make_pairs()
    need = ds.DeviceImages.nbytes(pairs)
    monkeypatch.setattr(ds, "_canonical", lambda device: torch.device(device))  # no CUDA runtime here
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (need, 10 * need))  # free: 1x, needs <= 0.5x
    with pytest.warns(DataWarning, match="free memory; patches are cut on the CPU"):
        sampler = ds.patch_sampler(pairs, device="cuda", patch=8, batch=2, qp_sampling="uniform", seed=0)
    assert type(sampler) is PatchSampler
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # decided once per set and device: no second warning
        ds.patch_sampler(pairs, device="cuda", patch=8, batch=2, qp_sampling="uniform", seed=0)


def test_trainer_losses_are_the_same_on_both_paths(monkeypatch):
    from search_space.arch import ArchConfig
    from trainers.losses import LossSpec
    from trainers.loop import Trainer
    from trainers.recipe import Recipe, Stage

    pairs = make_pairs(sizes=((96, 96), (96, 128)))
    stage = dict(loss=LossSpec.from_dict({"l1": 1.0}), lr=2e-3, patch=12, batch=3)
    recipe = Recipe(name="t", stages=(Stage(share=0.5, **stage), Stage(share=0.5, qp_sampling="curriculum", **stage)))
    arch = ArchConfig(channels=4, blocks=1, block="rep", down_factor=2, global_residual="nearest")

    def losses() -> list[float]:
        trainer = Trainer(arch, recipe, pairs, total_steps=6, seed=3)
        out: list[float] = []
        trainer.run(on_step=lambda step, loss: out.append(loss))
        return out

    numpy_losses = losses()
    monkeypatch.setattr(ds, "_cut_on_device", lambda device: True)
    assert losses() == numpy_losses
