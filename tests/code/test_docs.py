"""The docs fit the code: the configuration reference is the model's, the layout names every module, help
texts and docstrings carry no measurements, the README stays short and the site builds without a warning."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import yaml

from foldwise.config import FoldwiseConfig, StageConfig, load_config
from foldwise.config_reference import render, settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# Folders whose every module the layout must name. Alembic revisions are named by their folder only.
LAYOUT_FOLDERS = ["foldwise", "cli", "flows", "tasks", "db", "dashboard", "benchmarks", "scripts", "docker"]
UNLISTED = re.compile(r"^db/migrations/versions/")
DEFINES = re.compile(r"^(def|class) ", re.MULTILINE)
# A figure that was measured: a timing, a speed ratio, a score difference, a percentage, or the word.
MEASUREMENT = re.compile(r"measur|bench_|\d\s?(s|ms|min)\b|\bx\d|\dx\b|[+-]0\.\d|\d\s?%", re.IGNORECASE)


def test_configuration_reference_is_what_the_model_writes():
    committed = (DOCS / "configuration.md").read_text()
    assert committed == render(), "docs/configuration.md is stale: run `make docs` and commit it"


def flat_keys(value: object, prefix: str = "") -> set[str]:
    """Every key of a dumped config, sections joined with dots and list items as `key[].item`."""
    if isinstance(value, dict) and (prefix == "" or value):
        return {key for name, item in value.items() for key in flat_keys(item, f"{prefix}{name}.")}
    key = prefix.removesuffix(".")
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return {key} | {item_key for item_key in flat_keys(value[0], f"{key}[].")}
    return {key}


def test_reference_lists_every_setting_of_a_full_config(tmp_path):
    stages = [StageConfig(size=32, epochs=1, lr=0.01)]
    config = FoldwiseConfig(source={"path": tmp_path}, train={"warm_start_stages": stages})
    dumped = config.model_dump()
    dumped["source"]["storage_options"] = None  # a table of the user's keys, not settings of ours
    dumped["data"]["label_names"] = None
    keys = flat_keys(dumped)
    assert {"data_home", "train.stages[].lr", "train.warm_start_stages[].frozen", "ray.num_gpus"} <= keys
    listed = set(re.findall(r"^\| `([^`]+)` \|", (DOCS / "configuration.md").read_text(), re.MULTILINE))
    assert keys - listed == set(), "settings missing from docs/configuration.md"
    assert listed - keys == set(), "docs/configuration.md lists settings the model does not have"


def test_every_setting_says_what_it_does_without_a_measurement():
    """The descriptions are the Prefect run form's help texts: what a setting does, not how it scored."""
    undescribed = [key for key, field in settings(FoldwiseConfig.model_fields) if not field.description]
    assert undescribed == []
    measured = {
        key: field.description
        for key, field in settings(FoldwiseConfig.model_fields)
        if MEASUREMENT.search(field.description)
    }
    assert measured == {}, "move these figures to docs/benchmarks.md"


def docstrings(folders: list[str]) -> list[tuple[str, str]]:
    """(where, docstring) of every module, class and function in the code's folders."""
    found = []
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    text = ast.get_docstring(node)
                    if text:
                        found.append((f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 1)}", text))
    return found


def test_no_docstring_holds_a_measurement():
    """Timings and scores go stale in docstrings: they belong in docs/benchmarks.md with their command."""
    measured = {
        where: MEASUREMENT.search(text).group(0)
        for where, text in docstrings(["foldwise", "cli", "flows", "tasks", "db", "dashboard"])
        if MEASUREMENT.search(text)
    }
    assert measured == {}, "move these figures to docs/benchmarks.md"


def test_measurement_pattern_catches_the_figures_it_is_for():
    for text in ["it won on bench_quality", "126 s against 36 s", "x1.5 faster", "3.5x slower", "F2 +0.030"]:
        assert MEASUREMENT.search(text), text
    for text in [
        "'0 3 * * *'",
        "cuda:N",
        "cudnn.benchmark",
        "(0.5: two at a time)",
        "over 178,956,970 pixels",
        "'host:6379'",
    ]:
        assert not MEASUREMENT.search(text), text


def test_layout_names_every_module_and_only_modules_that_exist():
    page = (DOCS / "development.md").read_text()
    named = set(re.findall(r"`([\w/]+\.py)`", page))
    modules = {
        path.relative_to(ROOT).as_posix()
        for folder in LAYOUT_FOLDERS
        for path in (ROOT / folder).rglob("*.py")
        if not UNLISTED.search(path.relative_to(ROOT).as_posix())
        # a package's __init__.py is listed when it holds code of its own, not only imports
        and (path.name != "__init__.py" or DEFINES.search(path.read_text()))
    }
    assert modules - named == set(), "modules missing from the layout in docs/development.md"
    assert {name for name in named if name.split("/")[0] in LAYOUT_FOLDERS} - modules == set(), (
        "docs/development.md names modules that do not exist"
    )


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_every_page_is_in_the_site_navigation():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    in_nav = {page for entry in nav for page in entry.values()}
    assert in_nav == {path.name for path in DOCS.glob("*.md")}


def test_site_builds_without_a_warning(tmp_path):
    """--strict: a link to a missing page or anchor fails the build."""
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        check=True,
    )


def test_the_readme_config_loads(tmp_path):
    readme = (ROOT / "README.md").read_text()
    (example,) = re.findall(r"```toml\n(.*?)```", readme, re.DOTALL)
    (tmp_path / "planet.toml").write_text(example)
    config = load_config(tmp_path / "planet.toml")
    assert (config.source.kind, config.data.label_files) == ("local", "train_v2.csv")
    assert config.image_folder() == Path("~/data/planet/train-jpg").expanduser()
