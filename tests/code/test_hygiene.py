"""Every function a flow calls says what it does: the flows are where a newcomer starts reading, and each
step they name should explain itself (issue 21 item 5)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from types import FunctionType, ModuleType

from prefect import Flow, Task

import foldwise.flows


def flow_modules() -> list[ModuleType]:
    """The modules of `foldwise.flows` that define a flow."""
    names = (f"foldwise.flows.{info.name}" for info in pkgutil.iter_modules(foldwise.flows.__path__))
    modules = [importlib.import_module(name) for name in names]
    return [
        module
        for module in modules
        if any(
            isinstance(value, Flow) and value.fn.__module__ == module.__name__
            for value in vars(module).values()
        )
    ]


def plain_function(value: object) -> FunctionType | None:
    """The Foldwise function behind `value`, a task or a function; None for anything else."""
    if isinstance(value, Task):
        value = value.fn
    value = inspect.unwrap(value) if isinstance(value, FunctionType) else value
    if isinstance(value, FunctionType) and value.__module__.startswith("foldwise."):
        return value
    return None


def functions_a_flow_module_uses(module: ModuleType) -> Iterator[FunctionType]:
    """The Foldwise functions the module names: the functions its tasks wrap, and those its code calls
    or passes on (`runs.end_run(...)`, `retry_condition_fn=ingest.retry_pull`)."""
    namespace = vars(module)
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Name):
            value = namespace.get(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner = namespace.get(node.value.id)
            value = getattr(owner, node.attr, None) if isinstance(owner, ModuleType) else None
        else:
            continue
        function = plain_function(value)
        if function is not None:
            yield function


def test_the_flows_are_found():
    names = {module.__name__ for module in flow_modules()}
    assert names == {"foldwise.flows.retrain", "foldwise.flows.train_folds", "foldwise.flows.predict"}


def test_every_function_a_flow_calls_has_a_docstring():
    used = {function for module in flow_modules() for function in functions_a_flow_module_uses(module)}
    assert len(used) > 20  # the tasks of both flows and the functions retrain calls directly
    missing = sorted(
        f"{function.__module__}.{function.__qualname__}" for function in used if not inspect.getdoc(function)
    )
    assert missing == []
