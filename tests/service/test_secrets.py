"""Credentials never stored or shown: a canary planted in every setting that can hold one, searched for
everywhere a run leaves something: Foldwise's database (PostgreSQL), Prefect's database, the data
home, the commands' output and the dashboard's pages."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import psycopg
import pytest
from prefect.blocks.system import Secret
from prefect.settings import get_current_settings
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import inspect, select, text
from streamlit.testing.v1 import AppTest

from foldwise.db.models import Run
from foldwise.db.session import get_engine, session_scope
from foldwise.tasks.demo import deliver_drop
from tests.conftest import CONFIGS, POSTGRES_ADMIN_URL, ROOT, TINY_TRAINING
from tests.sources.standin import FileServer

pytestmark = pytest.mark.slow
PASSWORD = "canary-Pa55word-7f3a"  # in the URL of the database and of the source
TOKEN = "canary-T0ken-91b2"  # in the source's storage options (an HTTP header)
APP = str(ROOT / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def prefect_server():
    """A real Prefect server and the path of its database file, to search."""
    with prefect_test_harness(server_startup_timeout=120):
        settings = get_current_settings()
        yield (
            str(settings.api.url),
            Path(settings.server.database.connection_url.get_secret_value().split("///")[1]),
        )


@pytest.fixture
def postgres_with_password():
    """A fresh PostgreSQL database, reached with a URL that carries the canary password (the test
    server trusts local connections, so any password opens it)."""
    name = f"foldwise_secret_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:5432/{name}"
    yield url
    get_engine(url).dispose()
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def protected_source(tmp_path):
    """The demo data as a tar.gz behind an HTTP server that wants the password and the token."""
    deliver_drop(tmp_path / "drop", n_images=48)
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "data.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "drop", arcname=".")
    basic = base64.b64encode(f"reader:{PASSWORD}".encode()).decode()
    server = FileServer(served, required_headers={"Authorization": f"Basic {basic}", "X-Api-Token": TOKEN})
    yield server
    server.close()


def foldwise(tmp_path, prefect_api, *arguments, env=None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "foldwise", *arguments]
    environment = os.environ | {"PREFECT_API_URL": prefect_api} | (env or {})
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)


def settings(tmp_path, database_url, source_url, token) -> list[str]:
    overrides = [
        f"data_home={tmp_path / 'home'}",
        f"source.path={tmp_path / 'home' / 'source'}",
        f"database_url={database_url}",
        "source.kind=url",
        f"source.url={source_url}",
        f"source.storage_options={{headers={{X-Api-Token='{token}'}}}}",
        "source.retries=0",
        *TINY_TRAINING,
    ]
    return ["--config", str(CONFIGS / "demo.toml"), *(part for o in overrides for part in ("--set", o))]


def database_dump(url: str) -> str:
    """Every row of every table, as text."""
    with get_engine(url).connect() as connection:
        tables = inspect(connection).get_table_names()
        return "\n".join(
            str(row)
            for table in tables
            for row in connection.execute(text(f'SELECT CAST(t AS TEXT) FROM "{table}" t'))
        )


def dashboard_text(monkeypatch, url: str) -> str:
    """Everything the dashboard's pages put on screen."""

    def walk(node) -> list[str]:
        found = [str(getattr(node, "proto", ""))]
        children = getattr(node, "children", {})
        for child in children.values() if isinstance(children, dict) else children:
            found += walk(child)
        return found

    monkeypatch.setenv("FOLDWISE_DATABASE_URL", url)
    app = AppTest.from_file(APP, default_timeout=60).run()
    shown = []
    for page in app.sidebar.radio(key="page").options:
        app.sidebar.radio(key="page").set_value(page).run()
        assert not app.exception, app.exception
        shown += walk(app._tree)
    return "\n".join(shown)


def test_a_canary_credential_in_every_url_setting_appears_nowhere(
    tmp_path, prefect_server, postgres_with_password, protected_source, monkeypatch
):
    prefect_api, prefect_db = prefect_server
    source_url = f"http://reader:{PASSWORD}@127.0.0.1:{protected_source.server.server_port}/data.tar.gz"
    arguments = settings(tmp_path, postgres_with_password, source_url, TOKEN)

    trained = foldwise(tmp_path, prefect_api, "run", *arguments)
    assert trained.returncode == 0 and "succeeded" in trained.stdout, trained.stdout + trained.stderr
    assert protected_source.calls  # the credentials opened the source
    images = sorted((tmp_path / "home" / "source" / "images").glob("*.png"))[:2]
    predicted = foldwise(
        tmp_path, prefect_api, "predict", *map(str, images), "--out", str(tmp_path / "p.csv"), *arguments
    )
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    protected_source.fail_next = [503] * 4  # a failure whose message would carry the URL
    failed = foldwise(tmp_path, prefect_api, "run", "--force", *arguments)
    assert failed.returncode != 0 and "reader:***@127.0.0.1" in failed.stderr, failed.stderr
    with session_scope(postgres_with_password) as session:
        statuses = [run.status for run in session.scalars(select(Run).order_by(Run.id))]
    assert statuses == ["succeeded", "failed"]

    places = {
        "Foldwise's database": database_dump(postgres_with_password),
        "Prefect's database": b"".join(
            path.read_bytes() for path in prefect_db.parent.glob(prefect_db.name + "*")
        ).decode("latin-1"),
        "the data home": b"".join(
            path.read_bytes() for path in (tmp_path / "home").rglob("*") if path.is_file()
        ).decode("latin-1"),
        "the output": "".join(r.stdout + r.stderr for r in (trained, predicted, failed)),
        "the dashboard": dashboard_text(monkeypatch, postgres_with_password),
    }
    assert "reader:***@" in places["Foldwise's database"] and "X-Api-Token" in places["Prefect's database"]
    for place, content in places.items():
        assert PASSWORD not in content and TOKEN not in content, f"a credential is in {place}"


def test_credentials_named_by_reference_are_used_and_only_the_reference_is_kept(
    tmp_path, prefect_server, protected_source
):
    prefect_api, _ = prefect_server
    Secret(value=TOKEN).save("foldwise-test-token", overwrite=True)
    source_url = f"http://reader:${{env:FOLDWISE_TEST_SOURCE_PASSWORD}}@127.0.0.1:{protected_source.server.server_port}/data.tar.gz"
    url = f"sqlite:///{tmp_path / 'f.db'}"
    arguments = settings(tmp_path, url, source_url, "${secret:foldwise-test-token}")
    trained = foldwise(
        tmp_path, prefect_api, "run", *arguments, env={"FOLDWISE_TEST_SOURCE_PASSWORD": PASSWORD}
    )
    assert trained.returncode == 0 and "succeeded" in trained.stdout, trained.stdout + trained.stderr
    with session_scope(url) as session:
        source = session.scalar(select(Run)).config["source"]
    assert source["url"] == source_url
    assert source["storage_options"] == {"headers": {"X-Api-Token": "${secret:foldwise-test-token}"}}
    missing = foldwise(tmp_path, prefect_api, "run", "--force", *arguments)
    assert missing.returncode != 0
    assert "environment variable FOLDWISE_TEST_SOURCE_PASSWORD is not set" in missing.stderr, missing.stderr
