"""The run config: one TOML file that says what to train, how, on what, and where it came from.

`nas.export` writes it for each chosen trial and `python -m trainers.full --config FILE` reads it
unchanged, so this module is the only place that knows the format:

```toml
[run]            # budget and data (flags of trainers.full override these)
steps = 20000
seed = 0
data = "builtin" # or a folder of HR images
val_data = ""    # "" = same source, val split
qps = [31, 39, 47, 55, 63]

[arch]           # an ArchConfig (search_space.arch)
...

[recipe]         # a Recipe (trainers.recipe), stages as [[recipe.stages]]
...

[provenance]     # free-form: study, trial number, arch hash, proxy metrics, latency and device
...
```
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from search_space.arch import ArchConfig
from search_space.configio import atomic_write, load_toml, reject_unknown_keys, strip_none
from search_space.errors import UserError
from trainers.recipe import Recipe

__all__ = ["RunConfig", "load_run_config", "save_run_config"]

_SECTIONS = ("run", "arch", "recipe", "provenance")
_RUN_KEYS = ("steps", "seed", "data", "val_data", "qps")


@dataclass(frozen=True)
class RunConfig:
    """Arch + recipe + budget/data + provenance of one training run."""

    arch: ArchConfig
    recipe: Recipe
    steps: int = 20000
    seed: int = 0
    data: str = "builtin"
    val_data: str = ""
    qps: tuple[int, ...] = (31, 39, 47, 55, 63)
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise UserError(f"run.steps must be a positive integer, got {self.steps!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(f"run.seed must be a non-negative integer, got {self.seed!r}")
        object.__setattr__(self, "qps", tuple(int(q) for q in self.qps))

    def with_overrides(self, **changes: Any) -> RunConfig:
        """A copy with the given fields replaced (None values are ignored: flag not given)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": {"steps": self.steps, "seed": self.seed, "data": self.data, "val_data": self.val_data, "qps": list(self.qps)},
            "arch": self.arch.to_dict(),
            "recipe": self.recipe.to_dict(),
            "provenance": dict(self.provenance),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> RunConfig:
        unknown = sorted(set(data) - set(_SECTIONS))
        if unknown:
            raise UserError(f"{source}: unknown section(s) {unknown}; valid sections: {', '.join(_SECTIONS)}")
        for needed in ("arch", "recipe"):
            if needed not in data:
                raise UserError(f"{source}: missing [{needed}] section (a run config needs [arch] and [recipe])")
        run = dict(data.get("run", {}))
        reject_unknown_keys(f"{source} [run]", run, _RUN_KEYS)
        try:
            arch = ArchConfig.from_dict(data["arch"])
            recipe = Recipe.from_dict(data["recipe"], source=source)
        except UserError as err:
            raise UserError(f"{source}: {err}") from None
        return cls(arch=arch, recipe=recipe, provenance=dict(data.get("provenance", {})), **run)


def save_run_config(config: RunConfig, path: str | os.PathLike[str]) -> Path:
    """Write `config` as TOML, atomically."""
    import tomli_w

    return atomic_write(path, tomli_w.dumps(strip_none(config.to_dict())))


def load_run_config(path: str | os.PathLike[str]) -> RunConfig:
    """Read a run config written by `save_run_config` or `nas.export` (or by hand)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"config file {str(file)!r} does not exist; pass a TOML written by nas.export or by hand")
    data = load_toml(file, what="config file")
    return RunConfig.from_dict(data, source=file.name)
