"""What every campaign-file model shares: strictness and the name and commit rules."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

__all__ = ["FULL_SHA", "NAME", "StrictModel", "check_name"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_name(value: str, what: str) -> str:
    if not NAME.match(value):
        raise ValueError(
            f"{what} {value!r} must start with a letter or digit and use only letters, digits, "
            "'_', '.', '-'"
        )
    return value
