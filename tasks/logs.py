"""One logger for task code: Prefect's run logger inside a flow or task run, plain logging outside."""

from __future__ import annotations

import logging

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger


def get_logger(name: str) -> logging.Logger | logging.LoggerAdapter:
    """The run's Prefect logger (its lines go to the Prefect UI), or the module's logger outside a run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(name)
