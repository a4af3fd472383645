"""The `retrain` flow: claim -> pull -> decide -> folds -> train each fold -> thresholds, metrics, record
-> champion gate -> report.

Its parameter is the configuration model, so the Prefect UI shows a typed form.
"""

from __future__ import annotations

import time
from dataclasses import replace

from prefect import flow
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from flows import task
from foldwise.config import FoldwiseConfig
from tasks import folds, ingest, models, registry, report, results, runs, train

start_run = task(runs.start_run, name="start-run")
claim_training = task(runs.claim_training, name="claim-training")
pull_data = task(ingest.ingest, name="pull-data", retry_condition_fn=ingest.retry_pull)
decide = task(runs.decide, name="decide")
skip_run = task(runs.skip_run, name="skip-run")
build_folds = task(folds.build_folds, name="build-folds")
train_fold = task(train.train_fold, name="train-fold", task_run_name="train-fold-{fold}")
record_results = task(results.record_results, name="record-results")
find_warm_start = task(models.warm_start_source, name="find-warm-start")
gate_candidate = task(registry.gate_candidate, name="champion-gate")
publish_report = task(report.publish_report, name="publish-report")


def retrain_steps(config: FoldwiseConfig, run_id: int, force: bool) -> runs.RunSummary:
    claim = claim_training(config, run_id)
    if not claim.train:
        return skip_run(config, run_id, None, claim.reason)
    pull = pull_data.with_options(
        retries=config.source.retries,
        retry_delay_seconds=exponential_backoff(config.source.retry_delay_seconds),
        retry_jitter_factor=0.5,
    )(config)
    decision = decide(config, pull, force)
    if not decision.train:
        return skip_run(config, run_id, pull, decision.reason)
    fold_set_id = build_folds(config, pull.dataset_version)
    warm_from = find_warm_start(config)
    outputs = [
        train_fold(config, run_id, fold_set_id, fold, warm_from) for fold in range(config.folds.n_folds)
    ]
    summary = record_results(config, run_id, pull, fold_set_id, outputs, decision.reason)
    gate_candidate(config, run_id)
    return summary


@flow(
    name="retrain",
    description="Pull new labeled data, retrain the fold ensemble, record thresholds and metrics.",
)
def retrain(config: FoldwiseConfig, force: bool = False) -> runs.RunSummary:
    started = time.perf_counter()
    run_id = start_run(config, flow_run_id=flow_run.get_id())
    try:
        with runs.heartbeat(config, run_id):
            summary = retrain_steps(config, run_id, force)
    except BaseException as error:
        runs.fail_run(config, run_id, error)
        raise
    finally:
        publish_report(config, run_id)
    return replace(summary, seconds=time.perf_counter() - started)
