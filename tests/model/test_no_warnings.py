"""A normal `foldwise run` and `foldwise predict` print no Python warnings: a warning a user sees on every
run teaches them to ignore warnings."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from foldwise.tasks.demo import deliver_drop
from tests.code.test_cli_errors import foldwise

pytestmark = pytest.mark.slow
# How the warnings module prints one: `file:line: SomeWarning: message`. Foldwise's own log records at
# level WARNING (a rare label, a small fold) are messages for the user, not Python warnings.
PYTHON_WARNING = re.compile(r"^.*\b\w*Warning: .*$", re.MULTILINE)


def python_warnings(result) -> list[str]:
    return PYTHON_WARNING.findall(result.stdout + result.stderr)


def test_a_tiny_run_and_a_prediction_print_no_python_warnings(tmp_path):
    drop = deliver_drop(tmp_path / "source", n_images=32)
    run = foldwise(tmp_path, "run")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "promoted" in run.stdout, run.stdout  # a whole run: trained, gated, promoted
    assert python_warnings(run) == [], run.stderr

    out = tmp_path / "predictions" / "labels.csv"
    predict = foldwise(tmp_path, "predict", str(drop.label_file.parent / "images"), "--out", str(out))
    assert predict.returncode == 0, predict.stdout + predict.stderr
    assert out.exists(), predict.stdout
    assert python_warnings(predict) == [], predict.stderr


def test_the_warning_pattern_finds_a_python_warning_and_not_a_log_record():
    printed = SimpleNamespace(
        stdout="run 1: succeeded\n",
        stderr="WARNING class six has 3 OOF positives (< 5): keeps the global threshold\n"
        "/x/y.py:128: RuntimeWarning: 'm' found in sys.modules\n",
    )
    assert python_warnings(printed) == ["/x/y.py:128: RuntimeWarning: 'm' found in sys.modules"]
