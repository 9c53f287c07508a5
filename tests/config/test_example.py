"""The commented example configuration."""
from __future__ import annotations

import re
import tomllib

import pytest

from erphub import config

BUILTIN_PLATFORMS = {"kingdee", "sap_b1", "yonyou", "jiandaoyun"}


def uncommented(text: str) -> str:
    """The example with every commented-out setting turned on (prose comments stay)."""
    return "\n".join(re.sub(r"^#(?=[\[a-z])", "", line) for line in text.splitlines())


def test_written_example_loads(tmp_path):
    # Given the example written to a new file
    path = config.write_example(tmp_path / "erphub.toml")
    # When it is loaded
    settings = config.load(path, env={})
    # Then it is valid as it stands, with the defaults
    assert settings.store.url == "sqlite:///erphub.db"
    assert settings.broker.url == "memory://"
    assert settings.connections == {}


def test_example_shows_every_builtin_platform_and_some_flows():
    # Given the example with its commented-out blocks turned on
    data = tomllib.loads(uncommented(config.example_config()))
    # Then it is valid TOML with one connection per built-in platform
    platforms = {c["platform"] for c in data["connections"].values()}
    assert platforms == BUILTIN_PLATFORMS
    # and secrets only as references
    for connection in data["connections"].values():
        for key in ("password", "app_secret", "api_key"):
            if key in connection:
                assert set(connection[key]) == {"env"}
    # and flows that name its connections and parse as flows
    assert len(data["flows"]) >= 2
    for flow in data["flows"]:
        assert {flow["source"], *flow["targets"]} <= set(data["connections"])
        config.Flow.model_validate(flow)


def test_write_example_refuses_to_overwrite(tmp_path):
    # Given an existing file
    path = tmp_path / "erphub.toml"
    path.write_text("# mine\n", encoding="utf-8")
    # When the example is written there without permission
    with pytest.raises(FileExistsError):
        config.write_example(path)
    # Then the file is untouched
    assert path.read_text(encoding="utf-8") == "# mine\n"


def test_write_example_overwrites_when_asked(tmp_path):
    # Given an existing file
    path = tmp_path / "erphub.toml"
    path.write_text("# mine\n", encoding="utf-8")
    # When overwriting is asked for
    config.write_example(path, overwrite=True)
    # Then the example replaced it
    assert path.read_text(encoding="utf-8") == config.example_config()
