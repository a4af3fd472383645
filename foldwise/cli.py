"""The `foldwise` command: a thin layer over tasks and flows."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Annotated

import typer

from foldwise.config import ConfigError, FoldwiseConfig, load_config

app = typer.Typer(
    help="Keep a multi-label image classifier fresh.", no_args_is_help=True, add_completion=False
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="TOML config file.")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config value: section.key=value (repeatable).")
]


def fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def read_config(path: Path, overrides: list[str] | None) -> FoldwiseConfig:
    try:
        return load_config(path, overrides)
    except ConfigError as error:
        raise fail(str(error)) from None


def known_errors() -> tuple[type[Exception], ...]:
    from db.session import SchemaError
    from tasks.archives import UnsafeArchive
    from tasks.ingest import IngestError
    from tasks.sources import SourceError

    return ConfigError, IngestError, SchemaError, SourceError, UnsafeArchive


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")
    for chatty in ("alembic.runtime.plugins", "httpx"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # fastai scripts a function at import; torch warns about it in every command otherwise.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption, set_: SetOption = None) -> None:
    """Create the schema, or upgrade it to this version's."""
    from db.session import current_revision, upgrade

    url = read_config(config, set_).resolved_database_url()
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
    from tasks.demo import deliver_drop, delivered_drops

    settings = read_config(config, set_)
    delivered = delivered_drops(settings.source.path)
    if delivered and not next_drop:
        typer.echo(f"{settings.source.path} already has demo drop(s) {delivered}; `--next` delivers another")
        return
    drop = deliver_drop(settings.source.path, seed=settings.folds.seed, n_images=images)
    typer.echo(f"demo drop {drop.number}: {drop.n_images} images, labels in {drop.label_file}")


@app.command()
def ingest(config: ConfigOption, set_: SetOption = None) -> None:
    """Pull what is new from the source folder into the database."""
    from tasks.ingest import ingest as run_ingest

    settings = read_config(config, set_)
    try:
        summary = run_ingest(settings)
    except known_errors() as error:
        raise fail(str(error)) from None
    typer.echo(str(summary))


@app.command()
def run(
    config: ConfigOption,
    set_: SetOption = None,
    force: Annotated[bool, typer.Option(help="Train even if no new data arrived.")] = False,
) -> None:
    """Run the retraining flow once and print a summary."""
    settings = read_config(config, set_)
    from flows.retrain import retrain
    from tasks.train import PretrainedWeightsUnavailable

    try:
        summary = retrain(settings, force=force)
    except (*known_errors(), PretrainedWeightsUnavailable) as error:
        raise fail(str(error)) from None
    line = f"run {summary.run_id}: {summary.status} ({summary.reason})"
    if summary.fbeta_oof is not None:
        line += f", OOF F{settings.thresholds.beta:g} {summary.fbeta_oof:.4f}"
    if summary.fbeta_holdout is not None:
        line += f", holdout F{settings.thresholds.beta:g} {summary.fbeta_holdout:.4f}"
    if summary.seconds is not None:
        line += f", {summary.seconds:.0f}s"
    typer.echo(line)


@app.command()
def serve(config: ConfigOption, set_: SetOption = None) -> None:
    """Serve the `retrain` deployment: scheduled runs, and runs triggered from the Prefect UI."""
    settings = read_config(config, set_)
    from prefect import serve as prefect_serve

    from db.session import ensure_schema
    from flows.deployment import build_deployment, describe_schedule

    try:
        ensure_schema(settings.resolved_database_url())
        deployment = build_deployment(settings)
    except known_errors() as error:
        raise fail(str(error)) from None
    typer.echo(
        f"serving deployment retrain/{settings.name}: {describe_schedule(settings.service)}, "
        f"one run at a time ({settings.service.when_busy} when busy); Ctrl-C stops"
    )
    prefect_serve(deployment)


@app.command()
def dashboard(
    config: ConfigOption,
    set_: SetOption = None,
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8501,
    address: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 to share it.")] = "127.0.0.1",
) -> None:
    """Open the Streamlit dashboard on the config's database (it only reads)."""
    import os
    import subprocess

    from dashboard import streamlit_command
    from foldwise.config import DATABASE_URL_ENV

    settings = read_config(config, set_)
    command = streamlit_command(port, address)
    typer.echo(f"dashboard at http://{address}:{port} (Ctrl-C stops)")
    env = os.environ | {DATABASE_URL_ENV: settings.resolved_database_url()}
    raise typer.Exit(subprocess.call(command, env=env))


@app.command()
def models(config: ConfigOption, set_: SetOption = None) -> None:
    """List the models (successful runs), the champion marked, with their latest gate decision."""
    from db import registry
    from db.session import ensure_schema, session_scope

    url = read_config(config, set_).resolved_database_url()
    try:
        ensure_schema(url)
    except known_errors() as error:
        raise fail(str(error)) from None
    with session_scope(url) as session:
        rows = registry.models(session=session)
    if not rows:
        typer.echo("no models yet: a successful `foldwise run` makes the first one")
    for row in rows:
        marker = "*" if row["champion"] else " "
        score = "-" if row["fbeta_oof"] is None else f"{row['fbeta_oof']:.4f}"
        typer.echo(
            f"{marker} run {row['run_id']:>4}  {row['finished_at']:%Y-%m-%d %H:%M}  {row['dataset_size']:>7} samples"
            f"  OOF {score}  {row['decision']}"
        )


@app.command()
def promote(
    run_id: Annotated[int, typer.Argument(help="The successful run whose model becomes champion.")],
    config: ConfigOption,
    set_: SetOption = None,
    reason: Annotated[str, typer.Option(help="Recorded with the decision.")] = "by hand",
) -> None:
    """Make a run's model the champion, whatever the gate said (recorded)."""
    from tasks.models import ModelError
    from tasks.registry import RegistryError
    from tasks.registry import promote as promote_model

    try:
        typer.echo(promote_model(read_config(config, set_), run_id, reason))
    except (RegistryError, ModelError) as error:
        raise fail(str(error)) from None


@app.command()
def rollback(
    config: ConfigOption,
    set_: SetOption = None,
    reason: Annotated[str, typer.Option(help="Recorded with the decision.")] = "by hand",
) -> None:
    """Make the previous champion the champion again (recorded)."""
    from tasks.registry import RegistryError
    from tasks.registry import rollback as rollback_model

    try:
        typer.echo(rollback_model(read_config(config, set_), reason))
    except RegistryError as error:
        raise fail(str(error)) from None


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
    from flows.predict import predict_flow
    from tasks.models import ModelError

    settings = read_config(config, set_)
    try:
        summary = predict_flow(settings, [str(image) for image in images], str(out), model, tta)
    except (*known_errors(), ModelError) as error:
        raise fail(str(error)) from None
    for path, reason in summary.failures:
        typer.secho(f"skipped {path}: {reason}", fg=typer.colors.YELLOW, err=True)
    typer.echo(
        f"{summary.n_predicted} images predicted with run {summary.run_id}: {summary.labels_path}, "
        f"{summary.probabilities_path}"
        + (f"; {len(summary.failures)} unreadable, skipped" if summary.failures else "")
    )
