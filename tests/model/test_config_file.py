"""The retrain flow configured by a file named in a parameter, as prefect.yaml's deployments run it: the
path relative to the run's working directory, the paths inside it relative to the file's folder."""

import pytest
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import select

from foldwise.config import ConfigError
from foldwise.db.models import Run
from foldwise.db.session import session_scope
from foldwise.flows.retrain import retrain
from foldwise.tasks.demo import deliver_drop
from tests.conftest import tiny_demo_config

pytestmark = pytest.mark.slow

TINY_PROJECT = """
name = "from-file"
data_home = "../home"

[source]
path = "../home/source"

[data]
label_files = "labels_*.csv"
id_column = "image_name"
label_column = "tags"
label_delimiter = " "
image_dir = "images"
image_suffix = ".png"

[folds]
n_folds = 2

[model]
pretrained = false

[train]
batch_size = 16
stages = [{ size = 16, epochs = 1, lr = 1e-2 }]

[gate]
fraction = 0
"""


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_a_run_reads_the_config_file_named_relative_to_its_working_directory(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    (project / "configs" / "tiny.toml").write_text(TINY_PROJECT)
    deliver_drop(project / "home" / "source", n_images=32)
    monkeypatch.chdir(project)

    summary = retrain(config_file="configs/tiny.toml")

    assert summary.status == "succeeded"
    # The default database lies in data_home, "../home" from the file's folder: project/home.
    with session_scope(f"sqlite:///{project / 'home' / 'foldwise.db'}") as session:
        run = session.scalars(select(Run)).one()
        assert run.id == summary.run_id and run.status == "succeeded"
        assert run.config["name"] == "from-file" and run.config["folds"]["n_folds"] == 2


def test_the_flow_refuses_both_a_config_and_a_config_file_or_neither(tmp_path):
    config = tiny_demo_config(tmp_path, f"sqlite:///{tmp_path / 'foldwise.db'}")
    with pytest.raises(ConfigError, match="exactly one"):
        retrain()
    with pytest.raises(ConfigError, match="exactly one"):
        retrain(config, config_file="configs/demo.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        retrain(config_file=str(tmp_path / "missing.toml"))
