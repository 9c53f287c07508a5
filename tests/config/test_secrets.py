"""Secrets are references, resolve from the environment or a file, and are never printed."""
from __future__ import annotations

import json
import os

import pytest

from connectors.redaction import redact_text
from erphub import config
from erphub.config import ConfigInvalid
from tests.config.samples import VALID, VALID_ENV

CONNECTION = """
[connections.kingdee_prod]
platform = "fakeerp"
url = "https://erp.example.com/k3cloud/"
acct_id = "62f1d3e8"
username = "api"
{password}
"""


def connection_file(write_config, password_line: str):
    return write_config(CONNECTION.format(password=password_line))


def test_a_literal_secret_is_refused_without_echoing_it(write_config):
    # Given a password written straight into the file
    literal = "Lit3ral-Secret-7731"
    path = connection_file(write_config, f'password = "{literal}"')
    # When it is loaded
    with pytest.raises(ConfigInvalid) as caught:
        config.load(path, env={})
    # Then the one problem says how to write it, and never shows it
    assert caught.value.problems == [(
        "connections.kingdee_prod.password",
        'write secrets as { env = "NAME" } or { file = "PATH" }, not in the file',
    )]
    assert literal not in str(caught.value)
    assert literal not in repr(caught.value)
    # and the literal is masked if it shows up anywhere later
    assert literal not in redact_text(f"login failed for password {literal}")


def test_env_reference_resolves_to_a_secret_str(write_config):
    # Given a password referenced from the environment
    path = connection_file(write_config, 'password = { env = "KD_PW" }')
    # When loaded with that variable set
    settings = config.load(path, env={"KD_PW": "env-secret-4410"})
    # Then the value is a SecretStr, and its source is remembered
    password = settings.connections["kingdee_prod"].password
    assert password.get_secret_value() == "env-secret-4410"
    assert settings.secret_source("connections.kingdee_prod.password") == "env:KD_PW"


def test_file_reference_resolves_without_its_trailing_newline(write_config, tmp_path):
    # Given a secret file with a trailing newline, referenced by absolute path
    secret_file = tmp_path / "kingdee.secret"
    secret_file.write_text("file-secret-8820\n", encoding="utf-8")
    path = connection_file(write_config, f'password = {{ file = "{secret_file}" }}')
    # When loaded
    settings = config.load(path, env={})
    # Then the content without the newline is the secret
    assert settings.connections["kingdee_prod"].password.get_secret_value() == "file-secret-8820"
    assert settings.secret_source("connections.kingdee_prod.password") == f"file:{secret_file}"


def test_relative_secret_file_is_found_next_to_the_config(write_config, tmp_path, monkeypatch):
    # Given a secret file beside the config, referenced by a relative path, and another cwd
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "kd").write_text("relative-secret-1187", encoding="utf-8")
    path = connection_file(write_config, 'password = { file = "secrets/kd" }')
    monkeypatch.chdir(os.path.dirname(tmp_path))
    # When loaded
    settings = config.load(path, env={})
    # Then the file next to the config was read
    assert settings.connections["kingdee_prod"].password.get_secret_value() == "relative-secret-1187"


def test_missing_env_var_names_the_key_and_the_variable(write_config):
    # Given a reference to a variable that is not set
    path = connection_file(write_config, 'password = { env = "KINGDEE_PASSWORD" }')
    # When loaded
    with pytest.raises(ConfigInvalid) as caught:
        config.load(path, env={"OTHER": "unrelated-value-3321"})
    # Then the key path and the variable name, and nothing else
    assert caught.value.problems == [
        ("connections.kingdee_prod.password", "environment variable KINGDEE_PASSWORD is not set"),
    ]


def test_unreadable_secret_file_names_the_key_and_the_file(write_config, tmp_path):
    # Given a reference to a file that does not exist
    missing = tmp_path / "absent"
    path = connection_file(write_config, f'password = {{ file = "{missing}" }}')
    # When loaded
    with pytest.raises(ConfigInvalid) as caught:
        config.load(path, env={})
    # Then the problem is at the key and names the file
    [(key, message)] = caught.value.problems
    assert key == "connections.kingdee_prod.password"
    assert message.startswith(f"cannot read secret file {missing}")


@pytest.mark.parametrize("reference", [
    'password = { env = "A", file = "/b" }',
    'password = { vault = "kv/kingdee" }',
    'password = { env = "" }',
])
def test_malformed_references_are_one_problem(write_config, reference):
    path = connection_file(write_config, reference)
    with pytest.raises(ConfigInvalid) as caught:
        config.load(path, env={})
    [(key, message)] = caught.value.problems
    assert key == "connections.kingdee_prod.password"
    assert "exactly one of the two" in message


def test_optional_secret_fields_take_references_too(write_config):
    # Given an optional secret given as a reference
    path = connection_file(write_config, 'password = { env = "KD_PW" }\napp_secret = { env = "KD_APP" }')
    # When loaded
    settings = config.load(path, env={"KD_PW": "env-secret-4410", "KD_APP": "app-secret-6650"})
    # Then it resolves like any other
    assert settings.connections["kingdee_prod"].app_secret.get_secret_value() == "app-secret-6650"


def test_a_secret_never_appears_in_any_rendering(write_config):
    # Given settings with resolved secrets and a store URL carrying a password
    path = write_config(VALID)
    env = {**VALID_ENV, "ERPHUB_STORE_URL": "postgresql+psycopg://erphub:db-pass-6612@db/erphub"}
    settings = config.load(path, env=env)
    secrets = [*VALID_ENV.values(), "db-pass-6612"]
    # When it is rendered every way a program might print it
    view = config.redacted_view(settings)
    renderings = [repr(settings), str(settings), settings.model_dump_json(), json.dumps(view),
                  repr(settings.connections["kingdee_prod"]), repr(settings.store)]
    # Then no secret shows
    for text in renderings:
        for secret in secrets:
            assert secret not in text
    # and the redacted view says where each secret comes from
    assert view["connections"]["kingdee_prod"]["password"] == "env:KINGDEE_PASSWORD"
    assert view["connections"]["sap_prod"]["password"] == "env:SAP_PASSWORD"
    assert view["store"]["url"] == "postgresql+psycopg://erphub:***@db/erphub"
    # while the program itself still has the real values
    assert settings.store.url.endswith("erphub:db-pass-6612@db/erphub")


def test_secrets_do_not_leak_through_other_problems(write_config):
    # Given resolved secrets and an unrelated problem in the same connection
    path = write_config(VALID.replace('acct_id = "62f1d3e8"', "acct_id = 5"))
    # When loaded
    with pytest.raises(ConfigInvalid) as caught:
        config.load(path, env=VALID_ENV)
    # Then the problem is reported and no secret is in the text
    assert caught.value.problems == [("connections.kingdee_prod.acct_id", "expected a string")]
    for secret in VALID_ENV.values():
        assert secret not in str(caught.value)


def test_resolved_secrets_are_masked_in_later_text(write_config):
    # Given loaded settings
    config.load(write_config(VALID), env=VALID_ENV)
    # When a secret shows up in some later log line
    line = f"POST /Login body={{'Password': '{VALID_ENV['SAP_PASSWORD']}'}} failed"
    # Then redaction masks it
    assert VALID_ENV["SAP_PASSWORD"] not in redact_text(line)


def test_redacted_view_is_plain_data_for_display(write_config):
    # Given loaded settings
    settings = config.load(write_config(VALID), env=VALID_ENV)
    # When viewed
    view = config.redacted_view(settings)
    # Then it is JSON-ready, with durations written as in the file
    assert view["flows"][0] == {"name": "master-data", "kind": "master_data", "source": "kingdee_prod",
                                "targets": ["sap_prod"], "entities": ["items", "warehouses"], "every": "5m"}
    assert view["connections"]["kingdee_prod"]["app_secret"] is None
    assert view["logging"] == {"level": "DEBUG", "format": "json"}
    json.dumps(view)


def test_redacted_view_masks_secrets_not_read_from_references():
    # Given settings built in code, with no reference to show
    from tests.config.conftest import FakeErpSettings

    connection = FakeErpSettings(platform="fakeerp", url="https://x.example.com", acct_id="a", username="u",
                                 password="code-secret-2298")
    settings = config.Settings(connections={"k": connection})
    # When viewed
    view = config.redacted_view(settings)
    # Then the secret shows as ***
    assert view["connections"]["k"]["password"] == "***"
