"""An unknown `model.arch` is caught when the config loads, before any work, in one line, and without
importing torch (which every command would otherwise pay for)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torchvision

from foldwise.config import ConfigError, load_config, resolve_arch, torchvision_classifiers
from tests.conftest import CONFIGS


def test_the_names_read_from_torchvision_sources_are_the_ones_it_registers():
    registered = set(torchvision.models.list_models(module=torchvision.models))
    assert torchvision_classifiers() == registered and {"resnet18", "convnext_tiny", "vit_b_16"} <= registered


def test_an_unknown_arch_is_one_line_with_the_closest_name():
    with pytest.raises(ConfigError) as raised:
        load_config(CONFIGS / "demo.toml", ["model.arch=resnt18"])
    [line] = str(raised.value).splitlines()[1:]
    assert line.startswith("  model.arch: ") and "'resnt18' is not a torchvision classification model" in line
    assert "did you mean 'resnet18'?" in line and "timm" in line
    assert load_config(CONFIGS / "demo.toml", ["model.arch=efficientnet_b0"]).model.arch == "efficientnet_b0"


def test_training_builds_what_the_config_check_accepts():
    assert resolve_arch("resnet18") is torchvision.models.resnet18
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        resolve_arch("resnt18")


def test_the_command_refuses_it_before_any_work_and_without_importing_torch(tmp_path):
    loads = "import sys; from foldwise.config import load_config; load_config(sys.argv[1]); print(sorted(sys.modules))"
    modules = subprocess.run(
        [sys.executable, "-c", loads, str(CONFIGS / "demo.toml")], capture_output=True, text=True, check=True
    ).stdout
    assert "'torch'" not in modules and "'torchvision'" not in modules and "'foldwise.config'" in modules

    result = subprocess.run(
        [sys.executable, "-m", "foldwise", "run", "--config", str(CONFIGS / "demo.toml")]
        + ["--set", f"data_home={tmp_path}", "--set", "model.arch='resnet_nonexistent'"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stderr.count("error: ") == 1, result.stderr
    assert "model.arch: Value error, 'resnet_nonexistent' is not a torchvision" in result.stderr
    assert "Traceback" not in result.stderr and "Prefect server" not in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []  # no database, no pull: nothing was done
