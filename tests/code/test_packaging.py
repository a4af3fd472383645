"""Issue 15 item 0: an installed Foldwise is one package, `foldwise`, whatever the repository's layout."""

import json
import subprocess
import sys
import zipfile

from tests.conftest import ROOT


def test_the_wheel_installs_only_the_foldwise_package(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            str(ROOT),
            "--wheel-dir",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,  # setuptools' build/ folder lands here, not in the checkout
    )
    (wheel,) = tmp_path.glob("foldwise-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top_level == {"foldwise"}, top_level  # no `flows`, `tasks`, `db` or `dashboard` beside it
    for module in (
        "foldwise/cli/commands.py",
        "foldwise/flows/retrain.py",
        "foldwise/tasks/train.py",
        "foldwise/db/session.py",
        "foldwise/dashboard/app.py",
        "foldwise/config/__init__.py",
        "foldwise/config/training.py",
        "foldwise/db/migrations/env.py",
        "foldwise/db/migrations/versions/0001_labels_samples_pulls_folds_runs.py",
    ):
        assert module in names, module


def ruff_findings(tmp_path, source: str) -> list[tuple[str, int]]:
    """(rule, line) of each finding of ruff, with the repository's settings, in a file holding `source`."""
    module = tmp_path / "module.py"
    module.write_text(source)
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--config", str(ROOT / "pyproject.toml")]
        + ["--output-format", "json", "--no-cache", str(module)],
        capture_output=True,
        text=True,
    )
    assert result.returncode in (0, 1), result.stderr  # 1: findings
    return [(finding["code"], finding["location"]["row"]) for finding in json.loads(result.stdout)]


def test_ruff_bans_the_layer_folders_bare_names(tmp_path):
    """`import tasks.archives` from the repository root loads a second copy of `foldwise.tasks.archives`."""
    source = (
        "import tasks.archives\n"
        "from cli.commands import run\n"
        "from dashboard import app\n"
        "from db import session\n"
        "from flows.retrain import retrain\n"
        "\n"
        "import foldwise.tasks.archives\n"
        "\n"
        "print(foldwise, tasks, session, retrain, app, run)\n"
    )
    banned = [line for rule, line in ruff_findings(tmp_path, source) if rule == "TID251"]
    assert banned == [1, 2, 3, 4, 5]  # not line 7, the package's own name


def test_ruff_sorts_foldwise_as_first_party(tmp_path):
    third_party_then_foldwise = (
        "import numpy\nfrom sqlalchemy import select\n\nfrom foldwise.db import session\n"
    )
    assert ruff_findings(tmp_path, third_party_then_foldwise + "\nprint(numpy, select, session)\n") == []
    among_third_party = "import numpy\nfrom foldwise.db import session\nfrom sqlalchemy import select\n"
    assert ruff_findings(tmp_path, among_third_party + "\nprint(numpy, select, session)\n") == [("I001", 1)]
