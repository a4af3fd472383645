"""The `foldwise` command: a thin layer over tasks and flows."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer
from typer.core import TyperGroup

from foldwise import secrets
from foldwise.cli.prefect_server import turn_off_telemetry
from foldwise.config import load_config
from foldwise.errors import FoldwiseError


class ReportFoldwiseErrors(TyperGroup):
    """A FoldwiseError from any command is one `error: ...` line on stderr and exit code 2."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except FoldwiseError as error:
            typer.secho(f"error: {secrets.mask(str(error))}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None


class HideFoldwiseErrorTracebacks(logging.Filter):
    """On the console, drops Prefect's engine records of a FoldwiseError: the traceback and the failed
    run's "Finished in state Failed" line, since the command prints the error once. Prefect's API log
    (the UI) keeps them. Any other exception, a bug, keeps its traceback."""

    # The engines' failed state quotes the exception: '... encountered an exception[:] IngestError: ...'.
    FAILED_BY = re.compile(r"Finished in state Failed\(.*?encountered an exception:? (?P<error>\w+): ")

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("prefect"):
            return True
        if record.exc_info:
            return not isinstance(record.exc_info[1], FoldwiseError)
        failed = self.FAILED_BY.match(record.getMessage())
        return not (failed and failed["error"] in names_of_subclasses(FoldwiseError))


def names_of_subclasses(base: type) -> set[str]:
    return {base.__name__}.union(*(names_of_subclasses(subclass) for subclass in base.__subclasses__()))


HIDE_FOLDWISE_ERROR_TRACEBACKS = HideFoldwiseErrorTracebacks()
app = typer.Typer(
    cls=ReportFoldwiseErrors,
    help="Keep a multi-label image classifier fresh.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="TOML config file.")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config value: section.key=value (repeatable).")
]


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    turn_off_telemetry()
    secrets.install_log_masking()
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(HIDE_FOLDWISE_ERROR_TRACEBACKS)  # added once, however often this runs
    for chatty in ("alembic.runtime.plugins", "httpx"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # fastai scripts a function at import; torch warns about it in every command otherwise.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption, set_: SetOption = None) -> None:
    """Create the schema, or upgrade it to this version's."""
    from foldwise.db.session import current_revision, upgrade

    url = load_config(config, set_).resolved_database_url()
    upgrade(url)
    typer.echo(f"database at revision {current_revision(url)}")


@app.command()
def demo(
    config: ConfigOption = Path("configs/demo.toml"),
    set_: SetOption = None,
    next_drop: Annotated[
        bool, typer.Option("--next", help="Deliver the next drop, so a run finds new data.")
    ] = False,
    images: Annotated[
        int | None, typer.Option(help="Images in this drop (default 600 first, 200 later).")
    ] = None,
) -> None:
    """Deliver demo data (digits from scikit-learn) into the config's source folder."""
    from foldwise.tasks.demo import deliver_drop, delivered_drops

    settings = load_config(config, set_)
    delivered = delivered_drops(settings.source.path)
    if delivered and not next_drop:
        typer.echo(f"{settings.source.path} already has demo drop(s) {delivered}; `--next` delivers another")
        return
    drop = deliver_drop(settings.source.path, seed=settings.folds.seed, n_images=images)
    typer.echo(f"demo drop {drop.number}: {drop.n_images} images, labels in {drop.label_file}")


@app.command()
def ingest(config: ConfigOption, set_: SetOption = None) -> None:
    """Pull the source into the database (as a run does), under the training lock."""
    from foldwise.tasks.ingest import ingest as run_ingest
    from foldwise.tasks.runs import training_lock

    settings = load_config(config, set_)
    with training_lock(settings, "foldwise ingest"):
        typer.echo(str(run_ingest(settings)))


@app.command()
def samples(
    config: ConfigOption,
    set_: SetOption = None,
    status: Annotated[
        str, typer.Option(help="'quarantined', 'retired', 'all' (both) or 'duplicates' (duplicate groups).")
    ] = "all",
) -> None:
    """List the samples out of the data set, with why: quarantined (image or row unusable) or retired;
    then the data set's duplicate groups (each shares one fold), naming those with conflicting labels."""
    from foldwise.db import queries
    from foldwise.db.session import ensure_schema, read_scope
    from foldwise.duplicates import describe_group
    from foldwise.tasks.folds import data_set_duplicates

    if status not in ("quarantined", "retired", "all", "duplicates"):
        raise typer.BadParameter(
            "must be 'quarantined', 'retired', 'all' or 'duplicates'", param_hint="--status"
        )
    settings = load_config(config, set_)
    url = settings.resolved_database_url()
    ensure_schema(url)
    if status != "duplicates":
        with read_scope(url) as session:
            rows = [
                row for row in queries.inactive_samples(session=session) if status in ("all", row["status"])
            ]
        if not rows:
            typer.echo("every sample is in the data set" if status == "all" else f"no {status} sample")
        for row in rows:
            typer.echo(f"{row['status']:<11}  {row['id']}  (since pull {row['since pull']}): {row['reason']}")
    if status in ("all", "duplicates"):
        duplicates = data_set_duplicates(settings)
        typer.echo(f"data set: {duplicates}")
        conflicting = duplicates.conflicting
        for group in duplicates.groups if status == "duplicates" else conflicting:
            conflict = "conflicting labels: " if group in conflicting else ""
            typer.echo(f"duplicates  {conflict}{describe_group(group)}")


@app.command()
def run(
    config: ConfigOption,
    set_: SetOption = None,
    force: Annotated[bool, typer.Option(help="Train even if no new data arrived.")] = False,
) -> None:
    """Run the retraining flow once and print a summary."""
    settings = load_config(config, set_)
    from foldwise import metrics
    from foldwise.cli.prefect_server import prefect_api
    from foldwise.flows.retrain import retrain

    with prefect_api():
        summary = retrain(settings, force=force)
    line = f"run {summary.run_id}: {summary.status}"
    line += f", {summary.gate} (trained: {summary.reason})" if summary.gate else f" ({summary.reason})"
    if summary.score_oof is not None:
        line += f", {metrics.oof_label(summary.metric)} {summary.score_oof:.4f}"
    if summary.score_gate_set is not None:
        line += f", gate set {summary.score_gate_set:.4f}"
    if summary.seconds is not None:
        line += f", {summary.seconds:.0f}s"
    typer.echo(line)


@app.command()
def serve(config: ConfigOption, set_: SetOption = None) -> None:
    """Serve the `retrain` deployment on a running Prefect server: scheduled runs, and runs triggered
    from the Prefect UI."""
    import threading

    from foldwise.cli.prefect_server import lasting_server

    settings = load_config(config, set_)
    lasting_server()  # before the slow imports (torch): a refusal comes at once
    from foldwise.db.session import ensure_schema
    from foldwise.flows.deployment import (
        build_deployment,
        deployment_url,
        describe_schedule,
        serve_deployment,
    )
    from foldwise.tasks.runs import mark_crashed_runs

    ensure_schema(settings.resolved_database_url())
    mark_crashed_runs(settings)  # what a restart of this host or container left running, said at once
    deployment = build_deployment(settings)
    name = f"retrain/{settings.name}"

    def registered(deployment_id: UUID) -> None:
        typer.echo(
            f"serving deployment {name}: {describe_schedule(settings.service)}, "
            f"one run at a time ({settings.service.when_busy} when busy); Ctrl-C stops"
        )
        typer.echo(f"Prefect UI: {deployment_url(deployment_id)}")
        if settings.service.cron or settings.service.interval_minutes:
            threading.Thread(
                target=report_next_scheduled_run,
                args=(deployment_id, name, settings.service.timezone),
                daemon=True,
            ).start()
        else:
            typer.echo(f"manual runs only: Run in the UI, or `prefect deployment run {name}`")

    serve_deployment(deployment, registered)


def report_next_scheduled_run(deployment_id: UUID, name: str, timezone: str) -> None:
    """Whether the server's scheduler really created runs: it fails silently otherwise (Prefect 3.8 on
    SQLAlchemy 2.1 did), and the first sign would be a missed night."""
    from zoneinfo import ZoneInfo

    from foldwise.flows.deployment import scheduler_loop_seconds, wait_for_scheduled_run

    timeout = 2 * scheduler_loop_seconds() + 10
    upcoming = wait_for_scheduled_run(deployment_id, timeout)
    if upcoming is None:
        typer.secho(
            f"warning: the Prefect server created no scheduled run of {name} in {timeout:.0f}s: its "
            "scheduler is not running or is failing; look at the server's log",
            fg=typer.colors.YELLOW,
            err=True,
        )
        return
    start = upcoming.expected_start_time.astimezone(ZoneInfo(timezone))
    typer.echo(f"next scheduled run: {start:%Y-%m-%d %H:%M:%S %Z} (flow run {upcoming.name})")


@app.command()
def dashboard(
    config: ConfigOption,
    set_: SetOption = None,
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8501,
    address: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 to share it.")] = "127.0.0.1",
) -> None:
    """Open the Streamlit dashboard on the config's database (it only reads)."""
    import os
    import signal
    import subprocess

    from foldwise.config import DATABASE_URL_ENV
    from foldwise.dashboard import streamlit_command

    settings = load_config(config, set_)
    command = streamlit_command(port, address)
    typer.echo(f"dashboard at http://{address}:{port} (Ctrl-C stops)")
    env = os.environ | {DATABASE_URL_ENV: settings.resolved_database_url()}
    streamlit = subprocess.Popen(command, env=env)

    def stop_streamlit(signum: int, _frame: object) -> None:  # and wait below, so the port is free at exit
        streamlit.send_signal(signum)

    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, stop_streamlit)
    raise typer.Exit(streamlit.wait())


@app.command()
def models(config: ConfigOption, set_: SetOption = None) -> None:
    """List the models (successful runs), the champion marked, with their latest gate decision."""
    from foldwise import metrics
    from foldwise.db import registry
    from foldwise.db.session import ensure_schema, session_scope

    url = load_config(config, set_).resolved_database_url()
    ensure_schema(url)
    with session_scope(url) as session:
        rows = registry.models(session=session)
    if not rows:
        typer.echo("no models yet: a successful `foldwise run` makes the first one")
    for row in rows:
        marker = "*" if row["champion"] else " "
        score = "-" if row["score_oof"] is None else f"{row['score_oof']:.4f}"
        name = metrics.metric_name(row["metric"], row["beta"])
        typer.echo(
            f"{marker} run {row['run_id']:>4}  {row['finished_at']:%Y-%m-%d %H:%M}  {row['dataset_size']:>7} samples"
            f"  {metrics.oof_label(name)} {score}  {row['decision']}"
        )


@app.command()
def promote(
    run_id: Annotated[int, typer.Argument(help="The successful run whose model becomes champion.")],
    config: ConfigOption,
    set_: SetOption = None,
    reason: Annotated[str, typer.Option(help="Recorded with the decision.")] = "by hand",
) -> None:
    """Make a run's model the champion, whatever the gate said (recorded)."""
    from foldwise.tasks.registry import promote as promote_model

    typer.echo(promote_model(load_config(config, set_), run_id, reason))


@app.command()
def rollback(
    config: ConfigOption,
    set_: SetOption = None,
    reason: Annotated[str, typer.Option(help="Recorded with the decision.")] = "by hand",
) -> None:
    """Make the previous champion the champion again (recorded)."""
    from foldwise.tasks.registry import rollback as rollback_model

    typer.echo(rollback_model(load_config(config, set_), reason))


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    config: ConfigOption,
    out: Annotated[Path, typer.Option(help="Labels CSV; probabilities go beside it.")],
    set_: SetOption = None,
    model: Annotated[str, typer.Option(help="'champion' or a run id.")] = "champion",
    tta: Annotated[bool, typer.Option(help="Average with test-time augmentation.")] = False,
) -> None:
    """Predict labels with the champion ensemble (or a run's): the seeds' submission format."""
    from foldwise.cli.prefect_server import prefect_api
    from foldwise.flows.predict import predict_flow

    settings = load_config(config, set_)
    with prefect_api():
        summary = predict_flow(settings, [str(image) for image in images], str(out), model, tta)
    for path, reason in summary.failures:
        typer.secho(f"skipped {path}: {reason}", fg=typer.colors.YELLOW, err=True)
    typer.echo(
        f"{summary.n_predicted} images predicted with run {summary.run_id}: {summary.labels_path}, "
        f"{summary.probabilities_path}"
        + (f"; {len(summary.failures)} unreadable, skipped" if summary.failures else "")
    )


@app.command()
def export(
    config: ConfigOption,
    out: Annotated[Path, typer.Option(help="Folder to write model.onnx and model.json into.")],
    set_: SetOption = None,
    model: Annotated[str, typer.Option(help="'champion' or a run id.")] = "champion",
    input_type: Annotated[
        str, typer.Option("--input", help="uint8: N x H x W x 3 RGB bytes; float: N x 3 x H x W in [0, 1].")
    ] = "uint8",
) -> None:
    """Export an ensemble for serving: one ONNX model, and its labels, thresholds and preprocessing."""
    from foldwise.tasks.ensemble import resolve_model
    from foldwise.tasks.export import export_model

    settings = load_config(config, set_)
    exported = export_model(resolve_model(settings, model), out, input_type)
    typer.echo(
        f"run {exported.run_id} ({exported.n_folds} folds, {exported.n_labels} labels): {exported.onnx_path}, "
        f"{exported.metadata_path}; onnxruntime matches PyTorch within {exported.max_difference:.1g}"
    )


@app.command()
def gc(
    config: ConfigOption,
    set_: SetOption = None,
    keep_last: Annotated[
        int | None, typer.Option(min=0, help="Successful runs kept (default: retention.keep_last).")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Say what would go; remove nothing.")] = False,
) -> None:
    """Remove the weights and predictions of runs retention does not keep, and unneeded cached images."""
    from foldwise.tasks.retention import collect_garbage_locked, storage_lines, storage_use

    settings = load_config(config, set_)
    report = collect_garbage_locked(settings, keep_last, dry_run)
    for line in [*report.lines(), *storage_lines(settings, storage_use(settings))]:
        typer.echo(line)


@app.command()
def storage(config: ConfigOption, set_: SetOption = None) -> None:
    """Show what the data home holds, by kind: weights, predictions, image cache, source, database."""
    from foldwise.tasks.retention import pinned_runs, storage_lines, storage_use

    settings = load_config(config, set_)
    for line in storage_lines(settings, storage_use(settings)):
        typer.echo(line)
    pins = pinned_runs(settings)
    typer.echo("pinned: " + ("; ".join(f"run {run_id} ({why})" for run_id, why in pins.items()) or "none"))


@app.command()
def pin(
    run_id: Annotated[int, typer.Argument(help="The successful run whose files gc must keep.")],
    config: ConfigOption,
    set_: SetOption = None,
    reason: Annotated[str, typer.Option(help="Shown by `foldwise storage` and gc.")] = "by hand",
) -> None:
    """Keep a run's files whatever retention says."""
    from foldwise.tasks.retention import pin as pin_run

    typer.echo(pin_run(load_config(config, set_), run_id, reason))


@app.command()
def unpin(
    run_id: Annotated[int, typer.Argument(help="A pinned run.")],
    config: ConfigOption,
    set_: SetOption = None,
) -> None:
    """Let retention decide on a pinned run's files again."""
    from foldwise.tasks.retention import unpin as unpin_run

    typer.echo(unpin_run(load_config(config, set_), run_id))
