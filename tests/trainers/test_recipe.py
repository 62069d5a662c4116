"""Recipes: TOML round trips of every shipped recipe, hashing, step ranges, schedules, errors."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from search_space.errors import UserError
from trainers.losses import LossSpec
from trainers.recipe import (
    RECIPES_DIR,
    Distill,
    Recipe,
    Stage,
    check_qp_sampling,
    list_recipes,
    load_recipe,
    lr_at,
    save_recipe,
)

SHIPPED = sorted(RECIPES_DIR.glob("*.toml"))
L1 = LossSpec.from_dict({"l1": 1.0})
MSE = LossSpec.from_dict({"mse": 1.0})


def stage(**kw: object) -> Stage:
    base: dict[str, object] = {"loss": L1, "lr": 1.0}
    base.update(kw)
    return Stage(**base)  # type: ignore[arg-type]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- shipped recipes


def test_all_expected_recipes_are_shipped() -> None:
    expected = {"proxy", "casr", "urpnet", "l1_only", "l1_then_l2", "basicvision", "full"}
    assert expected <= set(list_recipes())


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_recipe_round_trip(path: Path, tmp_path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    assert recipe.description
    assert load_recipe(path.stem) == recipe  # by name, from RECIPES_DIR
    out = save_recipe(recipe, tmp_path / path.name)
    again = load_recipe(out)
    assert again == recipe
    assert again.hash == recipe.hash
    # a second save of the reloaded recipe writes the same bytes (canonical output)
    save_recipe(again, tmp_path / "second.toml")
    assert (tmp_path / "second.toml").read_text() == out.read_text()
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_casr_recipe_matches_the_published_schedule() -> None:
    casr = load_recipe("casr")
    s1, s2, s3 = casr.stages
    assert (s1.loss.as_mapping(), s1.optimizer, s1.lr, s1.qp_sampling) == ({"l1": 1.0}, "adam", 5e-4, "fixed:31")
    assert (s2.loss.as_mapping(), s2.optimizer, s2.lr, s2.qp_sampling) == ({"mse": 1.0}, "adam", 5e-5, "uniform")
    assert s2.distill is not None and s2.distill.weight == 0.1 and not s2.remove_bias
    assert (s3.loss.as_mapping(), s3.optimizer, s3.lr, s3.remove_bias) == ({"mse": 1.0}, "adamw", 5e-5, True)
    assert s3.distill is not None and s3.distill.weight == 0.1


def test_shipped_hashes_are_distinct() -> None:
    hashes = [load_recipe(p).hash for p in SHIPPED]
    assert len(set(hashes)) == len(hashes)


# --------------------------------------------------------------------------- hashing


def test_hash_format_and_key_order_independence() -> None:
    a = Recipe.from_dict({"name": "a", "stages": [{"loss": {"l1": 1, "fft": 0.05}, "lr": 1, "patch": 48}]})
    b = Recipe.from_dict({"stages": [{"patch": 48, "lr": 1.0, "loss": {"fft": 0.05, "l1": 1.0}}], "name": "a"})
    assert a == b and a.hash == b.hash and hash(a) == hash(b)
    assert len(a.hash) == 12 and all(c in "0123456789abcdef" for c in a.hash)
    assert {a: 1}[b] == 1  # frozen and hashable: usable as a key


def test_labels_do_not_change_the_hash() -> None:
    r = Recipe(name="a", stages=(stage(),))
    assert dataclasses.replace(r, name="b", description="renamed copy").hash == r.hash


# Every Stage field with a different valid value; the test below checks the list is complete.
CHANGES: dict[str, dict[str, object]] = {
    "loss": {"loss": MSE},
    "lr": {"lr": 0.5},
    "share": {},  # covered by a two-stage recipe below
    "optimizer": {"optimizer": "adamw"},
    "weight_decay": {"weight_decay": 0.01},
    "schedule": {"schedule": "constant"},
    "warmup": {"warmup": 0.1},
    "min_lr": {"min_lr": 0.01},
    "milestones": {"schedule": "step", "milestones": (0.5,)},
    "gamma": {},  # covered with the step schedule below
    "patch": {"patch": 64},
    "batch": {"batch": 8},
    "qp_sampling": {"qp_sampling": "fixed:31"},
    "grad_clip": {"grad_clip": 1.0},
    "remove_bias": {"remove_bias": True},
    "distill": {"distill": Distill(teacher="casr_teacher", weight=0.1)},
    "init": {"init": "scratch"},
}


def test_every_stage_field_changes_the_hash() -> None:
    assert set(CHANGES) == {f.name for f in dataclasses.fields(Stage)}
    base = Recipe(name="r", stages=(stage(),))
    seen = {base.hash}
    for field_name, change in CHANGES.items():
        if not change:
            continue
        changed = Recipe(name="r", stages=(stage(**change),))
        assert changed.hash not in seen, field_name
        seen.add(changed.hash)
    two = Recipe(name="r", stages=(stage(share=0.5), stage(share=0.5)))
    assert Recipe(name="r", stages=(stage(share=0.6), stage(share=0.4))).hash != two.hash
    step = Recipe(name="r", stages=(stage(schedule="step", milestones=(0.5,)),))
    assert Recipe(name="r", stages=(stage(schedule="step", milestones=(0.5,), gamma=0.1),)).hash != step.hash
    dist = Distill(teacher="t", weight=0.1)
    assert Recipe(name="r", stages=(stage(distill=dist),)).hash != Recipe(
        name="r", stages=(stage(distill=Distill(teacher="t", weight=0.2)),)
    ).hash
    # the stage order is content too
    a, b = stage(share=0.5), stage(share=0.5, loss=MSE)
    assert Recipe(name="r", stages=(a, b)).hash != Recipe(name="r", stages=(b, a)).hash


def test_distill_loss_equal_to_stage_loss_is_canonical() -> None:
    explicit = stage(loss=MSE, distill=Distill(teacher="t", weight=0.1, loss=MSE))
    implicit = stage(loss=MSE, distill=Distill(teacher="t", weight=0.1))
    assert explicit == implicit
    other = stage(loss=MSE, distill=Distill(teacher="t", weight=0.1, loss=L1))
    assert Recipe(name="r", stages=(other,)).hash != Recipe(name="r", stages=(implicit,)).hash


# --------------------------------------------------------------------------- stage_bounds


def shares_recipe(*shares: float) -> Recipe:
    return Recipe(name="r", stages=tuple(stage(share=s) for s in shares))


def test_stage_bounds_by_hand() -> None:
    r = shares_recipe(0.5, 0.3, 0.2)
    # cumulative 0.5, 0.8 -> 10 steps: edges 5, 8
    assert r.stage_bounds(10) == [(0, 5), (5, 8), (8, 10)]
    # 5 steps: 2.5 rounds half up to 3, 0.8 * 5 = 4
    assert r.stage_bounds(5) == [(0, 3), (3, 4), (4, 5)]
    # CASR shares over 300 steps: 0.34 * 300 = 102, 0.67 * 300 = 201
    assert load_recipe("casr").stage_bounds(300) == [(0, 102), (102, 201), (201, 300)]
    assert shares_recipe(1.0).stage_bounds(1) == [(0, 1)]


@pytest.mark.parametrize("shares", [(1.0,), (0.85, 0.15), (0.34, 0.33, 0.33), (0.1, 0.2, 0.3, 0.4), (0.7, 0.2, 0.1)])
def test_stage_bounds_cover_exactly(shares: tuple[float, ...]) -> None:
    r = shares_recipe(*shares)
    for total in [*range(len(shares) + 9, 60), 299, 300, 1001, 123_457]:
        bounds = r.stage_bounds(total)
        assert bounds[0][0] == 0 and bounds[-1][1] == total
        assert all(bounds[i][1] == bounds[i + 1][0] for i in range(len(bounds) - 1))
        for (start, end), share in zip(bounds, shares):
            assert end > start
            assert abs((end - start) - share * total) <= 1.0  # never off by more than one step


def test_stage_bounds_too_few_steps() -> None:
    # 0.5/0.3/0.2 over 3 steps: edges round(1.5) = 2, round(2.4) = 2 -> stage 2 empty; 4 steps work
    with pytest.raises(UserError, match="use at least 4 steps"):
        shares_recipe(0.5, 0.3, 0.2).stage_bounds(3)
    # 0.9/0.1: 5 steps -> edge round(4.5) = 5 leaves stage 2 empty; 6 steps -> edge 5
    with pytest.raises(UserError, match="use at least 6 steps"):
        shares_recipe(0.9, 0.1).stage_bounds(5)
    for bad in [0, -3, 2.5, True]:
        with pytest.raises(UserError, match="total_steps must be a positive integer"):
            shares_recipe(1.0).stage_bounds(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- lr_at


def lrs(s: Stage, steps: int) -> list[float]:
    return [lr_at(s, step_in_stage=i, stage_steps=steps) for i in range(steps)]


def test_cosine_by_hand() -> None:
    r2 = math.sqrt(2) / 2
    assert lrs(stage(lr=1.0), 4) == pytest.approx([1.0, 0.5 * (1 + r2), 0.5, 0.5 * (1 - r2)])
    # with a floor: min_lr + (lr - min_lr) * (1 + cos(pi p)) / 2
    assert lrs(stage(lr=1.1, min_lr=0.1), 4) == pytest.approx([1.1, 0.1 + 0.5 * (1 + r2), 0.6, 0.1 + 0.5 * (1 - r2)])


def test_warmup_then_cosine_by_hand() -> None:
    # warmup 0.25 of 8 steps -> W = 2: 1/2, 2/2; then p = (s - 2) / 6
    got = lrs(stage(lr=1.0, warmup=0.25), 8)
    expected = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(6)]
    assert got == pytest.approx(expected)
    assert got[2] == pytest.approx(1.0) and got[5] == pytest.approx(0.5)
    assert got[3] == pytest.approx(0.5 * (1 + math.sqrt(3) / 2))


def test_step_schedule_by_hand() -> None:
    s = stage(lr=1.0, schedule="step", milestones=(0.5, 0.75), gamma=0.1)
    assert lrs(s, 8) == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    # 0.07 * 100 is 7.000000000000001 in floats; the decay still starts at step 7
    t = stage(lr=1.0, schedule="step", milestones=(0.07,), gamma=0.5)
    assert lr_at(t, step_in_stage=6, stage_steps=100) == 1.0
    assert lr_at(t, step_in_stage=7, stage_steps=100) == 0.5


def test_constant_with_warmup_by_hand() -> None:
    assert lrs(stage(lr=2.0, schedule="constant", warmup=0.5), 4) == pytest.approx([1.0, 2.0, 2.0, 2.0])
    # too few steps for any warm-up step: floor(0.05 * 10) = 0
    assert lrs(stage(lr=2.0, schedule="constant", warmup=0.05), 10) == [2.0] * 10


def test_lr_at_rejects_out_of_range_steps() -> None:
    with pytest.raises(ValueError):
        lr_at(stage(), step_in_stage=4, stage_steps=4)
    with pytest.raises(ValueError):
        lr_at(stage(), step_in_stage=-1, stage_steps=4)


# --------------------------------------------------------------------------- qp_sampling


@pytest.mark.parametrize("text", ["uniform", "curriculum", "fixed:31", "fixed:31,39,47", "fixed:0,63"])
def test_qp_sampling_valid(text: str) -> None:
    assert check_qp_sampling(text) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("random", "not recognised; valid forms: uniform, curriculum, fixed:Q"),
        ("fixed:", "'' is not a QP"),
        ("fixed: 31", "' 31' is not a QP"),
        ("fixed:31,", "'' is not a QP"),
        ("fixed:3a", "'3a' is not a QP"),
        ("fixed:-1", "'-1' is not a QP"),
        ("fixed:64", "QP 64 is outside 0..63"),
        ("fixed:31,31", "repeats a QP"),
        ("fixed:39,31", "ascending order: 'fixed:31,39'"),
        ("Uniform", "not recognised"),
    ],
)
def test_qp_sampling_invalid(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        check_qp_sampling(text)


# --------------------------------------------------------------------------- errors


STAGE_OK = 'loss = { l1 = 1.0 }\nlr = 1e-3\n'


def two_stage_file(tmp_path: Path, second: str) -> Path:
    text = f'name = "x"\n[[stages]]\nshare = 0.5\n{STAGE_OK}[[stages]]\nshare = 0.5\n{second}'
    return write(tmp_path, "x.toml", text)


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (STAGE_OK + "lrr = 1\n", r"recipe 'x.toml', stage 2: unknown key\(s\) 'lrr'; valid keys: loss, lr, share, optimizer"),
        (STAGE_OK + 'optimizer = "sgd"\n', r"recipe 'x.toml', stage 2: optimizer = 'sgd' is not valid; choose one of: adam, adamw"),
        (STAGE_OK + 'schedule = "linear"\n', r"stage 2: schedule = 'linear' is not valid; choose one of: cosine, step, constant"),
        (STAGE_OK + 'init = "resume"\n', r"stage 2: init = 'resume' is not valid; choose one of: continue, scratch"),
        ('loss = { l3 = 1.0 }\nlr = 1e-3\n', r"recipe 'x.toml', stage 2, loss: unknown loss 'l3'; valid losses: charbonnier, fft"),
        ("loss = { l1 = 1.0 }\n", r"stage 2: missing key 'lr'"),
        (STAGE_OK + 'qp_sampling = "fixed:39,31"\n', r"stage 2: qp_sampling 'fixed:39,31'.*'fixed:31,39'"),
        (STAGE_OK + "patch = 48.0\n", r"stage 2: patch must be an integer"),
        (STAGE_OK + "batch = 0\n", r"stage 2: batch must be >= 1"),
        (STAGE_OK + "grad_clip = 0\n", r"stage 2: grad_clip must be > 0"),
        (STAGE_OK + "warmup = 1.0\n", r"stage 2: warmup is a fraction of the stage and must be < 1"),
        (STAGE_OK + "min_lr = 0.01\n", r"stage 2: min_lr \(0.01\) must not exceed lr"),
        (STAGE_OK + 'schedule = "constant"\nmin_lr = 1e-5\n', r"min_lr only applies to schedule = 'cosine'"),
        (STAGE_OK + "milestones = [0.5]\n", r"milestones and gamma only apply to schedule = 'step'"),
        (STAGE_OK + 'schedule = "step"\n', r"schedule = 'step' needs milestones"),
        (STAGE_OK + 'schedule = "step"\nmilestones = [0.8, 0.5]\n', r"strictly increasing fractions"),
        (STAGE_OK + 'schedule = "step"\nmilestones = [0.5]\ngamma = 2.0\n', r"gamma .* must be < 1"),
        (STAGE_OK + 'remove_bias = "yes"\n', r"remove_bias must be true or false"),
        (STAGE_OK + "[stages.distill]\nweight = 0.1\n", r"stage 2, distill: missing key 'teacher'"),
        (STAGE_OK + '[stages.distill]\nteacher = "t"\nweight = 0.1\nlambda = 1\n', r"stage 2, distill: unknown key\(s\) 'lambda'; valid keys: teacher, weight, loss"),
        (STAGE_OK + '[stages.distill]\nteacher = "t"\nweight = 0\n', r"stage 2, distill: distill.weight must be > 0"),
    ],
)
def test_stage_errors_name_file_stage_and_key(tmp_path: Path, second: str, message: str) -> None:
    path = two_stage_file(tmp_path, second)
    with pytest.raises(UserError, match=message):
        load_recipe(path)


def test_recipe_level_errors(tmp_path: Path) -> None:
    bad_sum = write(tmp_path, "s.toml", f"[[stages]]\nshare = 0.5\n{STAGE_OK}[[stages]]\nshare = 0.4\n{STAGE_OK}")
    with pytest.raises(UserError, match=r"recipe 's.toml': stage shares \(0.5, 0.4\) sum to 0.9; .* must sum to 1"):
        load_recipe(bad_sum)
    bias = write(
        tmp_path, "b.toml",
        f"[[stages]]\nshare = 0.5\nremove_bias = true\n{STAGE_OK}[[stages]]\nshare = 0.5\n{STAGE_OK}",
    )
    with pytest.raises(UserError, match=r"recipe 'b.toml', stage 2: continues from bias-free stage 1"):
        load_recipe(bias)
    # re-initialising may bring biases back
    ok = write(
        tmp_path, "c.toml",
        f'[[stages]]\nshare = 0.5\nremove_bias = true\n{STAGE_OK}[[stages]]\nshare = 0.5\ninit = "scratch"\n{STAGE_OK}',
    )
    assert [s.remove_bias for s in load_recipe(ok).stages] == [True, False]
    top = write(tmp_path, "t.toml", f'nam = "t"\n[[stages]]\n{STAGE_OK}')
    with pytest.raises(UserError, match=r"recipe 't.toml': unknown key\(s\) 'nam'; valid keys: name, stages, description"):
        load_recipe(top)
    empty = write(tmp_path, "e.toml", 'name = "e"\n')
    with pytest.raises(UserError, match=r"recipe 'e.toml': needs at least one \[\[stages\]\] table"):
        load_recipe(empty)
    broken = write(tmp_path, "broken.toml", "name = \n")
    with pytest.raises(UserError, match=r"'.*broken.toml' is not valid TOML"):
        load_recipe(broken)


def test_file_without_name_is_named_after_its_stem(tmp_path: Path) -> None:
    path = write(tmp_path, "my_recipe.toml", f"[[stages]]\n{STAGE_OK}")
    recipe = load_recipe(path)
    assert recipe.name == "my_recipe"
    assert recipe.stages == (Stage(loss=L1, lr=1e-3),)


def test_unknown_name_and_missing_file() -> None:
    with pytest.raises(UserError, match=r"unknown recipe 'nope'; shipped recipes: .*casr.*proxy"):
        load_recipe("nope")
    with pytest.raises(UserError, match=r"recipe file 'missing/x.toml' does not exist"):
        load_recipe("missing/x.toml")


def test_direct_construction_validates() -> None:
    with pytest.raises(UserError, match="lr must be > 0"):
        stage(lr=0)
    with pytest.raises(UserError, match="has no stages"):
        Recipe(name="r", stages=())
    with pytest.raises(UserError, match="sum to 2"):
        Recipe(name="r", stages=(stage(), stage()))
    with pytest.raises(UserError, match="non-empty name"):
        Recipe(name=" ", stages=(stage(),))


def test_save_recipe(tmp_path: Path) -> None:
    r = Recipe(name="r", stages=(stage(),), description="d")
    path = save_recipe(r, tmp_path / "r.toml")
    text = path.read_text()
    assert "grad_clip" not in text and "distill" not in text  # None = absent in TOML
    save_recipe(dataclasses.replace(r, description="overwritten"), path)
    assert load_recipe(path).description == "overwritten"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.toml"]
    with pytest.raises(UserError, match="does not exist"):
        save_recipe(r, tmp_path / "no" / "r.toml")
