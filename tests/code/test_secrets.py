import logging

import pytest

from foldwise import secrets
from foldwise.config import FoldwiseConfig


def config(**values) -> FoldwiseConfig:
    return FoldwiseConfig.model_validate({"source": {"kind": "local", "path": "/data"}} | values)


def test_literal_credentials_are_masked_where_a_config_is_stored_and_references_kept():
    literal = config(
        database_url="postgresql+psycopg://app:hunter22@db/foldwise",
        source={
            "kind": "url",
            "url": "https://me:s3cr3t@host/x.zip?token=abcd1234&size=1",
            "storage_options": {"key": "AKIA-XYZ1", "secret": "${env:AWS_SECRET}", "anon": False},
        },
    )
    stored = literal.model_dump(mode="json")
    assert stored["database_url"] == "postgresql+psycopg://app:***@db/foldwise"
    assert stored["source"]["url"] == "https://me:***@host/x.zip?token=***&size=1"
    assert stored["source"]["storage_options"] == {"key": "***", "secret": "${env:AWS_SECRET}", "anon": False}
    assert literal.database_url.endswith("hunter22@db/foldwise")  # the object itself still works
    assert literal.literal_credentials() == ["database_url", "source.url", "source.storage_options"]

    named = config(database_url="postgresql+psycopg://app:${env:DB_PASSWORD}@db/foldwise")
    assert named.model_dump(mode="json")["database_url"] == named.database_url
    assert named.literal_credentials() == []


def test_references_resolve_where_used_and_the_values_are_masked_from_then_on(monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", "p@ss/w0rd!")
    named = config(database_url="postgresql+psycopg://app:${env:DB_PASSWORD}@db/foldwise")
    assert named.resolved_database_url() == "postgresql+psycopg://app:p@ss/w0rd!@db/foldwise"
    assert secrets.mask("connect failed with p@ss/w0rd! and p%40ss%2Fw0rd%21") == "connect failed with *** and ***"
    monkeypatch.delenv("DB_PASSWORD")
    with pytest.raises(secrets.SecretUnavailable, match="environment variable DB_PASSWORD is not set"):
        named.resolved_database_url()


def test_log_records_and_exceptions_are_masked(caplog):
    secrets.install_log_masking()
    secrets.remember("tok-98765")
    error = ConnectionError("GET https://u:pw9999@host/a failed with tok-98765")
    secrets.mask_exception(error)
    assert str(error) == "GET https://u:***@host/a failed with ***"
    with caplog.at_level(logging.INFO):
        logging.getLogger("any").info("fetching %s", "https://u:pw9999@host/a?sig=abcdef")
    assert "pw9999" not in caplog.text and "abcdef" not in caplog.text
    assert "https://u:***@host/a?sig=***" in caplog.text


def test_a_deployment_refuses_a_credential_written_into_its_config():
    from foldwise.config import ConfigError
    from foldwise.flows.deployment import build_deployment

    literal = config(name="x", database_url="postgresql+psycopg://app:hunter22@db/foldwise")
    with pytest.raises(ConfigError, match=r"database_url hold\(s\) a credential.*\$\{env:NAME\}"):
        build_deployment(literal)
    named = config(name="x", database_url="postgresql+psycopg://app:${env:DB_PASSWORD}@db/foldwise")
    parameters = build_deployment(named).parameters
    assert parameters["config"]["database_url"] == "postgresql+psycopg://app:${env:DB_PASSWORD}@db/foldwise"
