"""Run the real `foldwise` command with a stop point, so that a test can kill it exactly there.

    python -m tests.service.faults POINT MARKER SECONDS -- run --config ... --set ...

When the run reaches POINT it writes the file MARKER and sleeps SECONDS (a test kills it meanwhile
with SIGKILL, or lets it go on: a slow step). The points patch the code the flow calls, before the
command imports the flow, so the rest of the run is the product's own code.
"""

from __future__ import annotations

import functools
import inspect
import sys
import time
from pathlib import Path

from fastai.callback.core import Callback


def stop_here(marker: Path, seconds: float) -> None:
    marker.write_text("reached")
    time.sleep(seconds)


def patch(point: str, marker: Path, seconds: float) -> None:
    import foldwise.db.folds
    import foldwise.db.registry
    import foldwise.db.samples
    import foldwise.tasks.registry
    import foldwise.tasks.results
    import foldwise.tasks.train

    def after(module, name, condition=lambda arguments: True):
        """Stop after `module.name` returned (inside its transaction, if it has one)."""
        original = getattr(module, name)

        @functools.wraps(original)  # Prefect binds a task's parameters by its signature
        def patched(*args, **kwargs):
            result = original(*args, **kwargs)
            if condition(inspect.signature(original).bind(*args, **kwargs).arguments):
                stop_here(marker, seconds)
            return result

        setattr(module, name, patched)

    if point == "ingest":  # samples inserted, the pull's transaction not committed
        after(foldwise.db.samples, "add_events")
    elif point == "folds":  # the fold set's rows written, not committed
        after(foldwise.db.folds, "save_fold_set")
    elif point == "between-folds":  # fold 0 trained and recorded, fold 1 not started
        after(foldwise.tasks.train, "train_fold", lambda arguments: arguments["fold"] == 0)
    elif point == "mid-epoch":  # fold 0 recorded, fold 1 in the middle of its first epoch
        build_learner, learners = foldwise.tasks.train.build_learner, []

        class StopAfterTheFirstBatch(Callback):
            def after_batch(self):
                if self.training and self.iter == 0:
                    stop_here(marker, seconds)

        def patched_build_learner(*args, **kwargs):
            learn = build_learner(*args, **kwargs)
            learners.append(learn)
            if len(learners) == 2:
                learn.add_cb(StopAfterTheFirstBatch())
            return learn

        foldwise.tasks.train.build_learner = patched_build_learner
    elif point == "thresholds":  # every fold recorded, nothing of the results
        after(foldwise.tasks.results, "choose_thresholds")
    elif point == "gate":  # results recorded, the gate's decision written, not committed
        after(foldwise.db.registry, "add_decision")
    elif point == "gate-scoring":  # results recorded, the models scored on the gate set, no transaction open
        after(foldwise.tasks.registry, "judge_against_champion")
    else:
        raise SystemExit(f"unknown point {point!r}")


def main() -> None:
    point, marker, seconds, separator, *command = sys.argv[1:]
    assert separator == "--", "usage: POINT MARKER SECONDS -- foldwise arguments"
    patch(point, Path(marker), float(seconds))
    from foldwise.cli import app

    app(command, prog_name="foldwise")


if __name__ == "__main__":
    main()
