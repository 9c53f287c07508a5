"""Every problem is reported with its key path, exactly once, all at once."""
from __future__ import annotations

import pytest

from erphub import config
from erphub.config import ConfigInvalid
from tests.config.samples import VALID, VALID_ENV


def problems_of(write_config, text: str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    path = write_config(text)
    with pytest.raises(ConfigInvalid) as caught:
        config.load(path, env=VALID_ENV if env is None else env)
    return caught.value.problems


def replace(old: str, new: str) -> str:
    assert old in VALID
    return VALID.replace(old, new, 1)


@pytest.mark.parametrize(("text", "path", "message"), [
    pytest.param(VALID + "\n[stroe]\nurl = 'x'\n", "stroe", "unknown key (did you mean 'store'?)", id="unknown-section"),
    pytest.param(replace('format = "json"', 'format = "json"\ncolour = true'), "logging.colour", "unknown key",
                 id="unknown-key-in-section"),
    pytest.param(replace('username = "api"', 'username = "api"\nusrname = "x"'), "connections.kingdee_prod.usrname",
                 "unknown key (did you mean 'username'?)", id="unknown-connection-key"),
    pytest.param(replace('url = "postgresql+psycopg://erphub@db.example.com/erphub"', 'url = "not a url"'),
                 "store.url", "not a valid SQLAlchemy URL", id="store-url"),
    pytest.param(replace('url = "postgresql+psycopg://erphub@db.example.com/erphub"', 'url = "mongo://db/x"'),
                 "store.url", "unknown database backend 'mongo'", id="store-backend"),
    pytest.param(replace('url = "redis://redis.example.com:6379/0"', 'url = "kafka://k:9092"'),
                 "broker.url", "expected memory://", id="broker-scheme"),
    pytest.param(replace('level = "debug"', 'level = "loud"'), "logging.level", "expected 'DEBUG'", id="log-level"),
    pytest.param(replace('url = "https://erp.example.com/k3cloud/"', 'url = "erp.example.com"'),
                 "connections.kingdee_prod.url", "not a valid URL", id="connection-url"),
    pytest.param(replace("read_timeout = 60", 'read_timeout = "slow"'), "connections.sap_prod.read_timeout",
                 "expected a number", id="wrong-type"),
    pytest.param(replace("read_timeout = 60", "read_timeout = 0"), "connections.sap_prod.read_timeout",
                 "should be greater than 0", id="out-of-range"),
    pytest.param(replace('acct_id = "62f1d3e8"\n', ""), "connections.kingdee_prod.acct_id",
                 "required key is missing", id="missing-key"),
    pytest.param(replace("read_timeout = 60", "verify_tls = 3"), "connections.sap_prod.verify_tls",
                 "expected true or false or a string", id="union-type"),
    pytest.param(replace("read_timeout = 60", "verify_tls = false"), "connections.sap_prod.verify_tls",
                 "false is refused", id="verify-tls-false"),
    pytest.param(replace("read_timeout = 60", 'verify_tls = "no-such-ca.pem"'), "connections.sap_prod.verify_tls",
                 "CA bundle no-such-ca.pem not found", id="verify-tls-missing-bundle"),
    pytest.param(replace('platform = "fakeerp"\nurl = "https://erp', 'platform = "kingdeee"\nurl = "https://erp'),
                 "connections.kingdee_prod.platform", "unknown platform 'kingdeee' (known: ", id="unknown-platform"),
    pytest.param(replace('platform = "fakeerp"\nurl = "https://erp', 'url = "https://erp'),
                 "connections.kingdee_prod.platform", "required key is missing (known platforms: ",
                 id="missing-platform"),
    pytest.param(VALID + '\n[connections."bad name"]\nplatform = "fakeerp"\n', 'connections.bad name',
                 "not a valid connection name", id="connection-name"),
    pytest.param(replace('every = "5m"', 'every = "5 minutes"'), "flows[0].every", "not a duration", id="every"),
    pytest.param(replace('every = "5m"', "every = 300"), "flows[0].every", "not a duration", id="every-number"),
    pytest.param(replace('kind = "master_data"', 'kind = "stock"'), "flows[0].kind", "expected 'master_data'",
                 id="kind"),
    pytest.param(replace('entities = ["items", "warehouses"]', 'entities = ["items", "wharehouses"]'),
                 "flows[0].entities[1]", "expected 'items'", id="entity-name"),
    pytest.param(replace('entities = ["items", "warehouses"]', 'entities = ["items", "movements"]'),
                 "flows[0].entities", "'movements' does not belong in a master_data flow", id="entity-kind"),
    pytest.param(replace('source = "kingdee_prod"', 'source = "kingdee_dev"'), "flows[0].source",
                 "no connection named 'kingdee_dev' (connections: kingdee_prod, sap_prod)", id="unknown-source"),
    pytest.param(replace('targets = ["sap_prod"]', 'targets = ["sap_dev"]'), "flows[0].targets[0]",
                 "no connection named 'sap_dev'", id="unknown-target"),
    pytest.param(replace('targets = ["sap_prod"]', 'targets = ["kingdee_prod"]'), "flows[0].targets",
                 "'kingdee_prod' is this flow's source", id="target-is-source"),
    pytest.param(replace('targets = ["sap_prod"]', "targets = []"), "flows[0].targets",
                 "a master_data flow needs at least one target", id="no-targets"),
    pytest.param(replace('name = "movements"', 'name = "master-data"'), "flows[1].name",
                 "another flow is already named 'master-data'", id="duplicate-flow-name"),
    pytest.param(replace('every = "5m"', 'every = "5m"\nevry = "1m"'), "flows[0].evry",
                 "unknown key (did you mean 'every'?)", id="unknown-flow-key"),
])
def test_each_problem_is_reported_once_with_its_key_path(write_config, text, path, message):
    # Given a valid file with one thing wrong
    # When it is loaded
    problems = problems_of(write_config, text)
    # Then exactly that one problem is reported, at its key path
    assert len(problems) == 1, problems
    assert problems[0][0] == path
    assert message in problems[0][1]


def test_unknown_platform_lists_the_known_ones(write_config, fake_platform):
    # Given a connection naming a platform nobody registered
    problems = problems_of(write_config, replace('platform = "fakeerp"\nurl = "https://erp', 'platform = "oracle"\nurl = "https://erp'))
    # Then the message lists the registered platforms
    assert fake_platform in problems[0][1]


def test_several_problems_are_all_reported_in_one_pass(write_config):
    # Given a file with problems in every section
    text = (VALID.replace('url = "redis://redis.example.com:6379/0"', 'url = "kafka://k"')
                 .replace('level = "debug"', 'level = "loud"')
                 .replace('url = "https://erp.example.com/k3cloud/"', 'url = "ftp://erp"')
                 .replace("read_timeout = 60", "read_timeout = -1")
                 .replace('every = "5m"', 'every = "often"')
                 .replace('targets = ["sap_prod"]\nevery = "30s"', 'targets = ["nowhere"]\nevery = "30s"'))
    # When it is loaded
    problems = problems_of(write_config, text)
    # Then every problem is there, in file order, each once
    assert [path for path, _ in problems] == [
        "broker.url", "logging.level", "connections.kingdee_prod.url", "connections.sap_prod.read_timeout",
        "flows[0].every", "flows[1].targets[0]",
    ]


def test_exception_text_has_one_line_per_problem(write_config):
    # Given a file with two problems
    path = write_config('[logging]\nlevel = "loud"\nformat = "xml"\n')
    # When it is loaded
    with pytest.raises(ConfigInvalid) as caught:
        config.load(path, env={})
    # Then str() renders "key path: message", one line each
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("logging.level: expected 'DEBUG'")
    assert lines[1] == "logging.format: expected 'text' or 'json'"
    assert caught.value.source == path.resolve()


@pytest.mark.parametrize(("text", "where"), [
    ("[store]\nurl = \n", "line 2, column 7"),
    ("[store]\nurl = 'x'\n[store]\n", "line 3, column 7"),
    ("[connections.a\nplatform = 'x'\n", "line 1, column 15"),
])
def test_malformed_toml_gives_line_and_column(write_config, text, where):
    # Given a file that is not valid TOML
    path = write_config(text)
    # When it is loaded
    with pytest.raises(ConfigInvalid) as caught:
        config.load(path, env={})
    # Then one problem names the file and the position
    [(problem_path, message)] = caught.value.problems
    assert problem_path == str(path)
    assert message.startswith(f"invalid TOML at {where}: ")


def test_wrong_shapes_are_reported_not_crashed_on(write_config):
    # Given sections of the wrong shape
    text = 'store = "sqlite:///x.db"\nconnections = 3\nflows = {name = "x"}\n'
    # When loaded
    problems = problems_of(write_config, text, env={})
    # Then each is one problem at its key
    assert [path for path, _ in problems] == ["store", "connections", "flows"]


def test_connection_that_is_not_a_table(write_config):
    # Given a connection written as a value
    problems = problems_of(write_config, '[connections]\nkingdee_prod = "https://erp"\n', env={})
    # Then the problem is at the connection
    assert problems == [("connections.kingdee_prod", "expected a table, written [connections.kingdee_prod]")]
