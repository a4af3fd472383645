"""What every configuration section shares: unknown keys are errors; `ConfigError` says what to change."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
)

from foldwise.errors import FoldwiseError


class ConfigError(FoldwiseError, ValueError):
    """A configuration that cannot be used; the message says what to change."""


class Section(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
