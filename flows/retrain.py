"""The `retrain` flow: claim -> tidy up after crashes -> pull -> decide -> the champion scores the pull's
new samples (prequential) -> folds -> train each fold (or reuse it; here or on Ray) -> thresholds,
metrics, record -> champion gate -> retention (if on) -> storage use -> release -> alerts -> report.

Its parameter is the configuration model, so the Prefect UI shows a typed form; or a config file's path,
for deployments that name one (prefect.yaml).
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial

from prefect import flow
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from foldwise import secrets
from foldwise.config import ConfigError, FoldwiseConfig, load_config
from foldwise.flows import task
from foldwise.flows.train_folds import fan_out_folds
from foldwise.tasks import (
    alerts,
    ensemble,
    folds,
    ingest,
    prequential,
    registry,
    report,
    results,
    retention,
    runs,
)


def retry_pull(task, task_run, state) -> bool:
    """Prefect's retry condition for the pull: retry transient errors only."""
    try:
        state.result()
    except BaseException as error:
        return ingest.is_transient(error)
    return False


start_run = task(runs.start_run, name="start-run")
claim_training = task(runs.claim_training, name="claim-training")
remove_leftovers = task(ensemble.remove_unrecorded_files, name="remove-leftovers")
gate_earlier_runs = task(registry.gate_ungated_runs, name="gate-earlier-runs")
pull_data = task(ingest.ingest, name="pull-data", retry_condition_fn=retry_pull)
decide = task(runs.decide, name="decide")
score_new_samples = task(prequential.score_new_samples, name="prequential-score")
skip_run = task(runs.skip_run, name="skip-run")
build_folds = task(folds.build_folds, name="build-folds")
find_warm_start = task(ensemble.warm_start_source, name="find-warm-start")
record_results = task(results.record_results, name="record-results")
gate_candidate = task(registry.gate_candidate, name="champion-gate")
publish_report = task(report.publish_report, name="publish-report")
apply_retention = task(retention.after_run, name="retention")
record_storage = task(retention.record_storage, name="record-storage")
send_alerts = task(alerts.send_run_alerts, name="send-alerts")


def retrain_steps(config: FoldwiseConfig, run_id: int, force: bool) -> runs.RunSummary:
    """The run's steps, from the claim of the training lock to the storage record."""
    phase = partial(runs.phase, config, run_id)  # where the run's time goes, recorded with it
    claim = claim_training(config, run_id)
    if not claim.train:
        return skip_run(config, run_id, None, claim.reason)
    remove_leftovers(config)
    gate_earlier_runs(config)
    with phase("pull (images decoded into the cache)"):
        pull = pull_data.with_options(
            retries=config.source.retries,
            retry_delay_seconds=exponential_backoff(config.source.retry_delay_seconds),
            retry_jitter_factor=0.5,
        )(config)
    decision = decide(config, pull, force)
    score_new_samples(config, run_id, pull)  # the champion on the new samples, before any training on them
    if not decision.train:
        return skip_run(config, run_id, pull, decision.reason)
    with phase("folds"):
        fold_set_id = build_folds(config, pull.dataset_version)
    warm_from = find_warm_start(config, run_id, fold_set_id)
    outputs = fan_out_folds(config, run_id, fold_set_id, warm_from)  # each fold records its own time
    with phase("thresholds and records"):
        summary = record_results(config, run_id, pull, fold_set_id, outputs, decision.reason)
    with phase("gate"):
        verdict = gate_candidate(config, run_id)
    summary = replace(summary, gate=verdict.reason)
    if config.retention.after_each_run:
        apply_retention(config)
    record_storage(config, run_id)
    return summary


@flow(
    name="retrain",
    description="Pull new labeled data, retrain the fold ensemble, record thresholds and metrics.",
)
def retrain(
    config: FoldwiseConfig | None = None, force: bool = False, config_file: str | None = None
) -> runs.RunSummary:
    """Give `config` (the settings: a form in the Prefect UI) or `config_file` (a TOML file, its path relative
    to the run's working directory: a deployment's pull step sets it), not both."""
    secrets.install_log_masking()  # also in deployment runs, which Prefect starts in processes of its own
    if (config is None) == (config_file is None):
        raise ConfigError("the retrain flow takes `config` or `config_file`: give exactly one")
    if config_file is not None:
        config = load_config(config_file)
    started = time.perf_counter()
    run_id = start_run(config, flow_run_id=flow_run.get_id())
    error = None
    try:
        with (
            runs.heartbeat(config, run_id, runs.run_holder(run_id)),
            runs.time_limit(
                config.service.run_timeout_minutes, f"run {run_id}", "service.run_timeout_minutes"
            ),
        ):
            summary = retrain_steps(config, run_id, force)
    except BaseException as raised:
        error = raised
        raise
    finally:
        runs.end_run(config, run_id, error)  # its last write, and the release of the lock
        send_alerts(config, run_id)  # never raises
        publish_report(config, run_id)
    return replace(summary, seconds=time.perf_counter() - started)
