"""Prefect flows: they wire the plain functions of `tasks/` into runs."""

import functools
from collections.abc import Callable

from prefect import task as prefect_task
from prefect.cache_policies import NO_CACHE

from foldwise import secrets


def task(fn: Callable, **options):
    """A Prefect task of a plain function. Inputs are configs and ids, outputs go to the DB and files:
    nothing to cache between runs. An error leaves it with credentials masked, since Prefect keeps
    its message in the task's state."""

    @functools.wraps(fn)
    def masking_credentials(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BaseException as error:
            secrets.mask_exception(error)
            raise

    return prefect_task(masking_credentials, cache_policy=NO_CACHE, **options)
