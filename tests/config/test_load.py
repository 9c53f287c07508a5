"""Loading a valid configuration, the defaults, and the environment overrides."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from erphub import config
from erphub.config import ConfigInvalid, FlowEntity, FlowKind, Settings
from tests.config.conftest import FakeErpSettings
from tests.config.samples import VALID, VALID_ENV


def test_valid_file_loads_into_typed_frozen_settings(write_config):
    # Given a file with every section and two connections of a registered platform
    path = write_config(VALID)
    # When it is loaded
    settings = config.load(path, env=VALID_ENV)
    # Then every section is typed, and each connection by its platform's Settings model
    assert settings.store.url == "postgresql+psycopg://erphub@db.example.com/erphub"
    assert settings.broker.url == "redis://redis.example.com:6379/0"
    assert settings.logging.level == "DEBUG" and settings.logging.format == "json"
    kingdee = settings.connections["kingdee_prod"]
    assert isinstance(kingdee, FakeErpSettings)
    assert kingdee.acct_id == "62f1d3e8" and kingdee.lcid == 2052
    assert isinstance(kingdee.password, SecretStr)
    assert kingdee.password.get_secret_value() == "kd-pass-5521-alpha"
    assert settings.connections["sap_prod"].read_timeout == 60.0
    master, movements = settings.flows
    assert master.kind is FlowKind.MASTER_DATA and master.every == timedelta(minutes=5)
    assert master.entities == [FlowEntity.ITEMS, FlowEntity.WAREHOUSES]
    assert movements.every == timedelta(seconds=30)
    assert settings.source == path.resolve()
    # and nothing can be changed afterwards
    with pytest.raises(Exception):
        settings.store = settings.store  # type: ignore[misc]


def test_entities_default_to_everything_the_flow_kind_carries(write_config):
    # Given flows that leave out their entities
    path = write_config(VALID)
    # When loaded
    settings = config.load(path, env=VALID_ENV)
    # Then a movements flow carries movements
    assert settings.flows[1].entities == [FlowEntity.MOVEMENTS]


def test_no_file_at_all_gives_the_embedded_defaults(tmp_path, monkeypatch):
    # Given an empty working directory and no ERPHUB_CONFIG
    monkeypatch.chdir(tmp_path)
    # When loading with no path
    settings = config.load(env={})
    # Then the defaults: SQLite in the working directory, the in-process broker, no connections
    assert settings.store.url == "sqlite:///erphub.db"
    assert settings.broker.url == "memory://"
    assert settings.logging.level == "INFO"
    assert settings.connections == {} and settings.flows == []
    assert settings.source is None
    assert settings == Settings()


def test_default_file_in_working_directory_is_read(tmp_path, monkeypatch, write_config):
    # Given ./erphub.toml in the working directory
    write_config('[logging]\nlevel = "WARNING"\n')
    monkeypatch.chdir(tmp_path)
    # When loading with no path
    settings = config.load(env={})
    # Then that file was read
    assert settings.logging.level == "WARNING"
    assert config.resolve_config_path(env={}) == Path("erphub.toml")


def test_erphub_config_names_the_file(write_config):
    # Given a file somewhere else, named by ERPHUB_CONFIG
    path = write_config('[logging]\nlevel = "ERROR"\n', name="elsewhere.toml")
    # When loading with no path
    settings = config.load(env={"ERPHUB_CONFIG": str(path)})
    # Then that file was read
    assert settings.logging.level == "ERROR"
    assert config.resolve_config_path(env={"ERPHUB_CONFIG": str(path)}) == path


def test_a_file_named_explicitly_must_exist(tmp_path):
    # Given a path to nothing
    missing = tmp_path / "nope.toml"
    # When it is loaded explicitly, or through ERPHUB_CONFIG
    for attempt in (lambda: config.load(missing, env={}),
                    lambda: config.load(env={"ERPHUB_CONFIG": str(missing)})):
        with pytest.raises(ConfigInvalid) as caught:
            attempt()
        # Then the problem names the file
        assert caught.value.problems == [(str(missing), "configuration file not found")]


def test_environment_overrides_store_broker_and_log_level(write_config):
    # Given a file with a store, broker and level
    path = write_config(VALID)
    env = {**VALID_ENV, "ERPHUB_STORE_URL": "sqlite:////var/lib/erphub/state.db",
           "ERPHUB_BROKER_URL": "amqp://rabbit.example.com:5672", "ERPHUB_LOG_LEVEL": "warning"}
    # When the environment overrides them
    settings = config.load(path, env=env)
    # Then the environment wins
    assert settings.store.url == "sqlite:////var/lib/erphub/state.db"
    assert settings.broker.url == "amqp://rabbit.example.com:5672"
    assert settings.logging.level == "WARNING"


def test_environment_overrides_apply_without_a_file(tmp_path, monkeypatch):
    # Given no file
    monkeypatch.chdir(tmp_path)
    # When only the environment says where the store is
    settings = config.load(env={"ERPHUB_STORE_URL": "postgresql+psycopg://erphub@db/erphub"})
    # Then it is used
    assert settings.store.url == "postgresql+psycopg://erphub@db/erphub"


def test_a_bad_override_names_the_key_and_the_variable(tmp_path, monkeypatch):
    # Given no file and a bad broker URL in the environment
    monkeypatch.chdir(tmp_path)
    # When loading
    with pytest.raises(ConfigInvalid) as caught:
        config.load(env={"ERPHUB_BROKER_URL": "kafka://k:9092"})
    # Then the problem names the key path and the variable it came from
    [(path, message)] = caught.value.problems
    assert path == "broker.url"
    assert message.endswith("(from ERPHUB_BROKER_URL)")


def test_durations_round_trip():
    # Given the duration forms the file accepts
    # Then they parse and print back the same
    for text, value in [("30s", timedelta(seconds=30)), ("5m", timedelta(minutes=5)),
                        ("1h", timedelta(hours=1)), ("1h30m", timedelta(minutes=90)), ("1d", timedelta(days=1))]:
        assert config.parse_duration(text) == value
        assert config.format_duration(value) == text
    for bad in ("", "5", "5x", "m5", "0s", "-5m"):
        with pytest.raises(ValueError):
            config.parse_duration(bad)


def test_settings_built_in_code_are_checked_too():
    # Given a flow whose source is not configured
    flow = config.Flow(name="f", kind="balances", source="ghost", every="1h")
    # When settings are built directly
    with pytest.raises(ValueError) as caught:
        Settings(flows=[flow])
    # Then the same reference check applies
    assert "flows[0].source: no connection named 'ghost'" in str(caught.value)
