"""Which network names Foldwise can build (torchvision classifiers, timm models), and what fastai
builds for a name: the one rule, used when a config loads and when a learner is built."""

from __future__ import annotations

import difflib
import functools
import importlib.util
import re
from pathlib import Path

from foldwise.config.base import ConfigError

# How torchvision's source registers a classification model: the decorator, maybe others, the builder.
REGISTERED_MODEL = re.compile(r"^@register_model\(\)\n(?:@.*\n)*def (\w+)\(", re.MULTILINE)


@functools.cache
def torchvision_classifiers() -> frozenset[str]:
    """The classification models torchvision registers, read from its source files: importing it
    (and so torch) takes seconds, and every command and
    every model record loads a config. If its source ever stops matching, it is imported after all."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    folder = Path(spec.submodule_search_locations[0]) / "models"
    names = frozenset(
        name for path in folder.glob("*.py") for name in REGISTERED_MODEL.findall(path.read_text())
    )
    if names:
        return names
    import torchvision

    return frozenset(torchvision.models.list_models(module=torchvision.models))


def unknown_arch(name: str) -> str | None:
    """Why `name` is no architecture Foldwise can build (a torchvision classifier or a timm model), or
    None. timm is imported (with torch) only for a name torchvision does not have."""
    torchvision_names = torchvision_classifiers()
    if name in torchvision_names:
        return None
    close = difflib.get_close_matches(name, torchvision_names, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "e.g. resnet18, resnet50, convnext_tiny"
    if importlib.util.find_spec("timm") is None:
        return (
            f"{name!r} is not a torchvision classification model ({hint}), and timm, for timm's models, "
            "is not installed"
        )
    import timm

    if name in timm.list_models():
        return None
    return f"{name!r} is neither a torchvision classification model ({hint}) nor a timm model"


def resolve_arch(name: str):
    """What fastai builds for `name`: torchvision's model function, else the timm model's name (fastai
    builds timm models by name). `unknown_arch` is the one rule for which names exist."""
    problem = unknown_arch(name)
    if problem:
        raise ConfigError(f"model.arch: {problem}")
    if name not in torchvision_classifiers():
        return name
    import torchvision

    return getattr(torchvision.models, name)
