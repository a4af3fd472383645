"""Issue 15 item 0: an installed Foldwise is one package, `foldwise`, whatever the repository's layout."""

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
        "foldwise/config.py",
        "foldwise/db/migrations/env.py",
        "foldwise/db/migrations/versions/0001_labels_samples_pulls_folds_runs.py",
    ):
        assert module in names, module
