"""`foldwise ingest` under the training lock, and `foldwise samples` listing what is out of the data set."""

from typer.testing import CliRunner

from foldwise.cli import app
from foldwise.tasks.demo import deliver_drop
from foldwise.tasks.runs import claim_training, end_run, start_run
from tests.conftest import CONFIGS, tiny_demo_config


def test_ingest_waits_for_no_one_else_and_samples_lists_what_is_out(tmp_path, database_url):
    config = tiny_demo_config(tmp_path, database_url, "service.when_busy=skip")
    drop = deliver_drop(config.source.path, n_images=6)
    missing = sorted((config.source.path / "images").glob("*.png"))[0]
    missing.unlink()
    arguments = ["--config", str(CONFIGS / "demo.toml")]
    arguments += ["--set", f"source.path={config.source.path}", "--set", f"database_url={database_url}"]
    arguments += ["--set", "service.when_busy=skip"]
    runner = CliRunner()

    fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    fresh = CliRunner().invoke(
        app,
        [
            "ingest",
            *arguments[:2],
            "--set",
            f"source.path={config.source.path}",
            "--set",
            f"database_url={fresh_url}",
        ],
    )
    assert fresh.exit_code == 0, fresh.output  # the first command on a new database creates its schema

    holder = start_run(config)
    assert claim_training(config, holder).train
    busy = runner.invoke(app, ["ingest", *arguments])
    assert busy.exit_code == 2 and f"error: run {holder} is training" in busy.output
    assert "Traceback" not in busy.output
    end_run(config, holder, None)

    pulled = runner.invoke(app, ["ingest", *arguments])
    assert pulled.exit_code == 0 and "5 added, 1 quarantined" in pulled.output, pulled.output
    listed = runner.invoke(app, ["samples", *arguments])
    assert listed.exit_code == 0
    assert listed.output.startswith(
        f"quarantined  {missing.stem}  (since pull 1): image file images/{missing.name} not found"
    )
    drop.label_file.write_text(drop.label_file.read_text().replace(f"{missing.stem},", "gone,"))
    runner.invoke(app, ["ingest", *arguments])
    retired = runner.invoke(app, ["samples", "--status", "retired", *arguments])
    assert retired.output.strip().startswith(
        f"retired      {missing.stem}  (since pull 2): no longer in any label file"
    )
