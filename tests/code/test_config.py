from pathlib import Path

import pytest

from foldwise.config import ConfigError, FoldwiseConfig, check_image_folder, load_config
from tests.conftest import CONFIGS


@pytest.mark.parametrize("name", ["demo", "planet", "hpa", "pascal"])
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / f"{name}.toml")
    assert isinstance(config, FoldwiseConfig)
    assert config.source.path.is_absolute() and config.data_home.is_absolute()
    assert len(config.train.stages) >= 2  # every recipe resizes progressively


def test_relative_paths_are_relative_to_the_config_file():
    config = load_config(CONFIGS / "demo.toml")
    assert config.source.path == (CONFIGS / "../var/demo/source").resolve()
    assert config.resolved_database_url() == f"sqlite:///{(CONFIGS / '../var/demo').resolve()}/foldwise.db"


def test_overrides_are_typed():
    config = load_config(
        CONFIGS / "demo.toml",
        [
            "folds.n_folds=4",
            "model.pretrained=true",
            "model.arch=resnet34",
            "train.stages=[{size=16, epochs=1}]",
        ],
    )
    assert config.folds.n_folds == 4
    assert config.model.pretrained is True
    assert config.model.arch == "resnet34"
    assert [(s.size, s.epochs, s.lr) for s in config.train.stages] == [(16, 1, None)]


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[source]\npath = "x"\n[folds]\nn_fold = 3\n')
    with pytest.raises(ConfigError, match=r"folds\.n_fold: unknown key"):
        load_config(path)


def test_unknown_key_from_the_command_line():
    with pytest.raises(ConfigError, match=r"model\.archh: unknown key"):
        load_config(CONFIGS / "demo.toml", ["model.archh=resnet18"])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"folds\.n_folds: .*integer"):
        load_config(CONFIGS / "demo.toml", ["folds.n_folds=many"])


def test_out_of_range_value():
    with pytest.raises(ConfigError, match=r"folds\.n_folds: .*greater than or equal to 2"):
        load_config(CONFIGS / "demo.toml", ["folds.n_folds=1"])


def test_malformed_override():
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(CONFIGS / "demo.toml", ["folds.n_folds"])


def test_override_into_a_value_is_refused():
    with pytest.raises(ConfigError, match="'name' is a value, not a section"):
        load_config(CONFIGS / "demo.toml", ["name.first=x"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[source\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_missing_source_section(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text('name = "x"\n')
    with pytest.raises(ConfigError, match="source: Field required"):
        load_config(path)


def test_missing_image_folder_is_named(tmp_path):
    config = load_config(CONFIGS / "planet.toml", [f"source.path={tmp_path}"])
    with pytest.raises(ConfigError, match=r"train-jpg does not exist; set source\.path and data\.image_dir"):
        check_image_folder(config)


def test_label_names_outside_vocabulary_are_refused():
    with pytest.raises(ConfigError, match="outside data.vocabulary"):
        load_config(CONFIGS / "hpa.toml", ['data.vocabulary=["Cytosol"]'])


def test_database_url_from_environment_wins(monkeypatch):
    monkeypatch.setenv("FOLDWISE_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert load_config(CONFIGS / "demo.toml").resolved_database_url() == "postgresql+psycopg://u@h/db"


def test_relative_sqlite_url_is_relative_to_the_config(tmp_path):
    config = load_config(CONFIGS / "demo.toml", ["database_url=sqlite:///records/f.db"])
    assert config.database_url == f"sqlite:///{(CONFIGS / 'records/f.db').resolve()}"
    assert Path(config.database_url.removeprefix("sqlite:///")).is_absolute()
