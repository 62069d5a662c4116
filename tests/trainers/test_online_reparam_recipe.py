"""The recipe key `online_reparam` (issue 21): default on, hashes unchanged at the default, applied by
the trainer, recorded with the result; the two settings train to the same losses."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from search_space.arch import ArchConfig
from search_space.blocks import OnlineReparam
from search_space.configio import content_hash
from search_space.errors import UserError
from trainers.data import PairedSet
from trainers.degrade import DegradeSpec
from trainers.lanczos import lanczos_downscale
from trainers.loop import Trainer
from trainers.losses import LossSpec
from trainers.recipe import Recipe, Stage, list_recipes, load_recipe

#: A casr-like network: rep_casr end blocks (the issue's 5.9x case) and a rep body.
ARCH = ArchConfig(channels=6, blocks=1, block="rep", activation="gelu", down_factor=3, end_block="rep_casr",
                  reconstruction="cascade")


def _recipe(*, online: bool = True) -> Recipe:
    stage = Stage(loss=LossSpec.from_dict({"l1": 1.0}), lr=2e-3, patch=24, batch=2)
    return Recipe(name="test", stages=(stage,), online_reparam=online)


@pytest.fixture(scope="module")
def train_set(rng_image) -> PairedSet:
    images = [rng_image(96, 96, seed=s) for s in range(2)]
    lr = {31: tuple(lanczos_downscale(hr).round().clip(0, 255).astype(np.uint8) for hr in images)}
    return PairedSet(names=("a", "b"), hr=tuple(images), lr=lr, spec=DegradeSpec(), source="synthetic", split="train")


def test_default_is_on_and_leaves_every_shipped_hash_and_dict_as_before() -> None:
    for name in list_recipes():
        recipe = load_recipe(name)
        assert recipe.online_reparam
        # The hash before the key existed: sha over the stages alone.
        assert recipe.hash == content_hash([s.to_dict() for s in recipe.stages])
        assert "online_reparam" not in recipe.to_dict()
        off = dataclasses.replace(recipe, online_reparam=False)
        assert off.hash != recipe.hash
        assert Recipe.from_dict(off.to_dict()) == off and Recipe.from_dict(recipe.to_dict()) == recipe


def test_a_non_bool_is_a_user_error() -> None:
    data = _recipe().to_dict() | {"online_reparam": "yes"}
    with pytest.raises(UserError, match="online_reparam"):
        Recipe.from_dict(data)


@pytest.mark.parametrize("online", [True, False])
def test_the_trainer_applies_the_key(online: bool, train_set: PairedSet) -> None:
    trainer = Trainer(ARCH, _recipe(online=online), train_set, total_steps=2, seed=0)
    trainer.run(until=1)
    switched = [m.online_reparam for m in trainer.model.modules() if isinstance(m, OnlineReparam)]
    assert switched and all(flag == online for flag in switched)


def test_online_and_multi_branch_training_give_the_same_losses_and_checkpoint_keys(train_set: PairedSet) -> None:
    runs = {}
    for online in (True, False):
        trainer = Trainer(ARCH, _recipe(online=online), train_set, total_steps=20, seed=3)
        losses = []
        trainer.run(on_step=lambda step, loss: losses.append(loss))
        runs[online] = (losses, trainer.state_dict())
    (on, state_on), (off, state_off) = runs[True], runs[False]
    assert max(abs(a - b) / abs(b) for a, b in zip(on, off)) <= 1e-4
    assert list(state_on["model"]) == list(state_off["model"])
    assert list(state_on["optimizer"]["state"]) == list(state_off["optimizer"]["state"])
