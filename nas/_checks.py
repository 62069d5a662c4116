"""Value checks shared by the study tables (`nas.study`) and the ablation tables (`nas.ablation_spec`).

Why a module of its own: both read user-written TOML, and a bad value should be worded the same way
whichever table it is in ("[proxy] steps must be an integer >= 1, got 0"). Every check raises a
`UserError` naming the key (`where`) and what is valid.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, TypeGuard

from search_space.configio import reject_unknown_keys
from search_space.errors import UserError

__all__ = ["choice", "integer", "is_int", "is_number", "positive", "table"]


def is_int(value: object) -> TypeGuard[int]:
    """An int that is not a bool (TOML `true` must not pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """A finite int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(where: str, value: object, *, minimum: int) -> int:
    """`value` as an int >= `minimum`, else a `UserError` naming `where`."""
    if not is_int(value) or value < minimum:
        raise UserError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def positive(where: str, value: object) -> float:
    """`value` as a float > 0, else a `UserError` naming `where`."""
    if not is_number(value) or value <= 0:
        raise UserError(f"{where} must be a positive number, got {value!r}")
    return float(value)


def choice(where: str, value: object, options: tuple[str, ...]) -> str:
    """`value` if it is one of `options`, else a `UserError` listing them."""
    if not isinstance(value, str) or value not in options:
        raise UserError(f"{where} is {value!r}; choose one of {', '.join(map(repr, options))}")
    return value


def table(where: str, data: object, cls: type) -> Mapping[str, Any]:
    """`data` as a mapping whose keys are all fields of the dataclass `cls`, else one clear error."""
    if not isinstance(data, Mapping):
        raise UserError(f"{where} must be a table of settings, got {data!r}")
    reject_unknown_keys(where, data, (f.name for f in dataclasses.fields(cls)))
    return data
