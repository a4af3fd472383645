"""The `retrain` flow: pull -> decide -> folds -> train each fold -> thresholds, metrics, record.

Its parameter is the configuration model, so the Prefect UI shows a typed form.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial

from prefect import flow
from prefect import task as prefect_task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from foldwise.config import FoldwiseConfig
from tasks import folds, ingest, results, runs, train

# Inputs are configs and ids, outputs go to the DB: nothing to cache between runs.
task = partial(prefect_task, cache_policy=NO_CACHE)
start_run = task(runs.start_run, name="start-run")
pull_data = task(ingest.ingest, name="pull-data")
decide = task(runs.decide, name="decide")
skip_run = task(runs.skip_run, name="skip-run")
build_folds = task(folds.build_folds, name="build-folds")
train_fold = task(train.train_fold, name="train-fold", task_run_name="train-fold-{fold}")
record_results = task(results.record_results, name="record-results")


@flow(name="retrain")
def retrain(config: FoldwiseConfig, force: bool = False) -> results.RunSummary:
    started = time.perf_counter()
    run_id = start_run(config, flow_run_id=flow_run.get_id())
    try:
        pull = pull_data(config)
        decision = decide(config, pull, force)
        if not decision.train:
            skip_run(config, run_id, pull, decision.reason)
            return results.RunSummary(run_id, "skipped", decision.reason)
        fold_set_id = build_folds(config, pull.dataset_version)
        outputs = [train_fold(config, run_id, fold_set_id, fold) for fold in range(config.folds.n_folds)]
        summary = record_results(config, run_id, pull, fold_set_id, outputs)
    except BaseException as error:
        runs.fail_run(config, run_id, error)
        raise
    return replace(summary, seconds=time.perf_counter() - started)
