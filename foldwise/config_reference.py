"""The configuration reference (docs/configuration.md), written from the configuration model itself, so that
it cannot drift from it: every setting as section.key, its type, its default and its description.

`python -m foldwise.config_reference docs/configuration.md` writes it (`make docs` does); a test fails when
the committed page differs from what this writes.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from foldwise.config import FoldwiseConfig, Section

HEADER = """# Configuration reference

<!-- Written by `python -m foldwise.config_reference docs/configuration.md` (`make docs`) from
foldwise/config/; edit the descriptions there, not here. -->

One pydantic model, `FoldwiseConfig` in `foldwise/config/`, is every setting: a TOML file, the
`--set section.key=value` overrides, the Prefect run form and the config recorded with each run are all
this model. Unknown keys and wrong types are errors that name the key. Relative paths are relative to the
config file's folder. The commented examples are in `configs/` (`demo.toml`, `planet.toml`, `hpa.toml`,
`pascal.toml`).
"""

BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}  # Field(ge=...) and the others, as signs
TYPE_NAMES = {str: "text", int: "integer", float: "number", bool: "boolean", Path: "path", Any: "any"}


def type_name(annotation: Any) -> str:
    """A setting's type in words: 'integer', 'one of `a`, `b`', 'list of text', 'number or unset'."""
    origin = get_origin(annotation)
    if origin is Literal:
        values = ", ".join(f"`{value}`" for value in get_args(annotation))
        return values if len(get_args(annotation)) == 1 else f"one of {values}"
    if origin in (Union, types.UnionType):
        options = [option for option in get_args(annotation) if option is not type(None)]
        words = " or ".join(type_name(option) for option in options)
        return f"{words} or unset" if len(options) < len(get_args(annotation)) else words
    if origin is list:
        (item,) = get_args(annotation)
        return f"list of {type_name(item).removeprefix('one of ')}"
    if origin is dict:
        return "table"
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation.__name__.removesuffix("Config").lower()
    return TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def constraints(field: FieldInfo) -> str:
    words = []
    for item in field.metadata:
        for attribute, sign in BOUNDS.items():
            if getattr(item, attribute, None) is not None:
                words.append(f"{sign} {getattr(item, attribute)}")
        if getattr(item, "min_length", None) is not None:
            words.append(f"at least {item.min_length}")
    return ", ".join(words)


def toml_value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_none=True)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    return repr(value)


def default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return f"`{toml_value(field.default_factory())}`"
    if field.is_required():
        return "required"
    return "unset" if field.default is None else f"`{toml_value(field.default)}`"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def section_of(annotation: Any) -> type[Section] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None


def list_item_section(annotation: Any) -> type[Section] | None:
    """The section a list setting holds items of (`train.stages`: stages), if any."""
    for candidate in [annotation, *get_args(annotation)]:
        if get_origin(candidate) is list:
            return section_of(get_args(candidate)[0])
    return None


def settings(fields: dict[str, FieldInfo], prefix: str = "") -> list[tuple[str, FieldInfo]]:
    """Every setting under `fields` as (section.key, field), in the model's order; the items of a list
    of sections as `key[].item`."""
    found = []
    for name, field in fields.items():
        key = f"{prefix}{name}"
        section = section_of(field.annotation)
        if section is not None:
            found.extend(settings(section.model_fields, f"{key}."))
            continue
        found.append((key, field))
        item = list_item_section(field.annotation)
        if item is not None:
            found.extend(settings(item.model_fields, f"{key}[]."))
    return found


def table(fields: dict[str, FieldInfo], prefix: str) -> list[str]:
    lines = ["| key | type | default | what it does |", "| --- | --- | --- | --- |"]
    for key, field in settings(fields, prefix):
        kind = type_name(field.annotation)
        bounds = constraints(field)
        if bounds:
            kind = f"{kind} ({bounds})"
        lines.append(f"| `{key}` | {cell(kind)} | {cell(default(field))} | {cell(field.description or '')} |")
    return lines


def render() -> str:
    """The reference page: the top-level settings, then one table per section, in the model's order."""
    fields = FoldwiseConfig.model_fields
    top = {name: field for name, field in fields.items() if section_of(field.annotation) is None}
    parts = [HEADER, "## Top level\n", *table(top, "")]
    for name, field in fields.items():
        section = section_of(field.annotation)
        if section is not None:
            about = " ".join((section.__doc__ or "").split())
            parts.extend(["", f"## `[{name}]`\n", f"{about}\n", *table(section.model_fields, f"{name}.")])
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m foldwise.config_reference PATH (e.g. docs/configuration.md)")
    Path(argv[0]).write_text(render())


if __name__ == "__main__":
    main(sys.argv[1:])
