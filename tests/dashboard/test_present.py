"""What the dashboard says about runs, checked on plain values: outcomes, the champion's decision,
progress of a running run, config differences, the Prefect link, durations."""

from __future__ import annotations

from datetime import datetime

import pytest

from foldwise.dashboard import present
from foldwise.db import registry

STAGES = [{"size": 16, "epochs": 2, "lr": 0.01}, {"size": 32, "epochs": 1, "lr": None}]
CONFIG = {
    "folds": {"n_folds": 3},
    "train": {"stages": STAGES, "warm_start_stages": [{"size": 32, "epochs": 1}]},
}


def decision(id_, kind, candidate, before, after, promoted, reason="") -> dict:
    return {
        "id": id_,
        "decided_at": datetime(2025, 1, id_),
        "kind": kind,
        "candidate_run_id": candidate,
        "champion_before": before,
        "champion_after": after,
        "promoted": promoted,
        "reason": reason,
    }


def test_outcomes_name_what_the_gate_or_the_run_did():
    assert registry.run_outcome("succeeded", "gate", promoted=False) == "rejected"
    assert registry.run_outcome("succeeded", "gate", promoted=True) == "promoted"
    assert registry.run_outcome("succeeded", "gate-failed") == "gate-failed"
    assert registry.run_outcome("succeeded", "promote", promoted=True) == "promoted"
    assert registry.run_outcome("succeeded", None) == "not gated"
    for status in ("running", "skipped", "failed", "crashed"):
        assert registry.run_outcome(status, None) == status
    assert registry.run_outcome("no such status", None) == "failed"
    assert set(present.OUTCOME_COLORS) == set(registry.OUTCOMES)  # every outcome has a badge colour


def test_the_champion_is_explained_by_the_decision_that_made_it_champion():
    history = [
        decision(1, "gate", 1, None, 1, True, "promoted: the first model"),
        decision(2, "gate", 2, 1, 2, True, "promoted: better"),
        decision(3, "gate", 3, 2, 2, False, "rejected: worse"),
        decision(4, "rollback", None, 2, 1, False, "rolled back by hand: run 2 -> run 1"),
    ]
    assert present.champion_decision(history, 1)["id"] == 4  # champion again since the rollback
    assert present.champion_decision(history[:3], 2)["reason"] == "promoted: better"  # a rejection keeps it
    assert present.champion_decision([], None) is None
    assert present.latest_decisions(history) == {1: history[0], 2: history[1], 3: history[2]}


def test_progress_counts_reused_folds_as_done_and_finds_the_epoch_now():
    epochs = [  # fold 0 reused (its epochs copied), fold 1 in its second stage
        *({"fold": 0, "stage": s, "epoch": e} for s, e in ((0, 0), (0, 1), (1, 0))),
        *({"fold": 1, "stage": s, "epoch": e} for s, e in ((0, 0), (0, 1), (1, 0))),
        {"fold": 2, "stage": 0, "epoch": 0},
    ]
    now = present.progress(CONFIG, False, epochs[:6], [{"fold": 0, "reused_from_run_id": 4}])
    assert (now.fold, now.stage, now.epochs_done, now.epochs_per_fold) == (1, 1, 1, 3)
    assert now.fraction == pytest.approx((3 + 3) / 9)
    assert now.describe() == (
        "1 of 3 folds done (fold 0 reused from run 4); training fold 1: stage 2 of 2 (32 px), epoch 1 of 1 done"
    )
    between = present.progress(
        CONFIG, False, epochs[:6], [{"fold": f, "reused_from_run_id": None} for f in (0, 1)]
    )
    assert (between.fold, between.epochs_done, between.fraction) == (2, 0, pytest.approx(6 / 9))
    assert "training fold 2: stage 1 of 2 (16 px), epoch 0 of 2 done" in between.describe()
    done = present.progress(
        CONFIG, False, epochs, [{"fold": f, "reused_from_run_id": None} for f in range(3)]
    )
    assert done.fraction == 1 and done.describe().endswith("scoring, thresholds and the champion gate")
    assert present.progress(CONFIG, False, [], []).describe().startswith("0 of 3 folds done; pulling data")
    warm = present.progress(CONFIG, True, [{"fold": 0, "stage": 0, "epoch": 0}], [])
    assert warm.epochs_per_fold == 1 and warm.fraction == pytest.approx(1 / 3)


def test_config_differences_keep_only_the_keys_that_differ_in_words():
    first = {"train": {"batch_size": 16, "stages": STAGES, "compile": False}, "gate": {"fraction": 0.1}}
    second = {"train": {"batch_size": 32, "stages": STAGES, "compile": True}, "name": "x"}
    assert present.config_differences({"run 1": first, "run 2": second}) == {
        "gate.fraction": {"run 1": "0.1", "run 2": "absent"},
        "name": {"run 1": "absent", "run 2": "x"},
        "train.batch_size": {"run 1": "16", "run 2": "32"},
        "train.compile": {"run 1": "no", "run 2": "yes"},
    }
    assert present.flat_config(first)["train.stages"] == "(size=16, epochs=2, lr=0.01), (size=32, epochs=1)"
    assert present.value_text(None) == "unset" and present.value_text(600.0) == "600"


def test_prefect_link_comes_from_the_ui_address_or_the_api_address(monkeypatch):
    monkeypatch.delenv("PREFECT_UI_URL", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert present.flow_run_link("abc") is None
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api/")
    assert present.flow_run_link("abc") == "http://127.0.0.1:4200/runs/flow-run/abc"
    assert present.flow_run_link(None) is None
    monkeypatch.setenv("PREFECT_UI_URL", "https://prefect.example/")
    assert present.flow_run_link("abc") == "https://prefect.example/runs/flow-run/abc"


def test_numbers_are_formatted_for_people():
    assert [present.duration(s) for s in (None, float("nan"), 42.4, 600.0, 3725)] == [
        "–",
        "–",
        "42 s",
        "10 min 00 s",
        "1 h 02 min",
    ]
    assert present.score(float("nan")) == "–" and present.score(0.81234) == "0.8123"
    assert (
        present.moment(datetime(2025, 3, 4, 5, 6, 7)) == "2025-03-04 05:06 UTC"
        and present.moment(None) == "–"
    )
