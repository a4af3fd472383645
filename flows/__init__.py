"""Prefect flows: they wire the plain functions of `tasks/` into runs."""

from functools import partial

from prefect import task as prefect_task
from prefect.cache_policies import NO_CACHE

# Inputs are configs and ids, outputs go to the DB and files: nothing to cache between runs.
task = partial(prefect_task, cache_policy=NO_CACHE)
