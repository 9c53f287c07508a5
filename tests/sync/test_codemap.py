"""Code mapping: rules, the explicit table, CSV import with line numbers, the CLI."""
from __future__ import annotations

import io
import logging
import textwrap

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from sync import codemap, idmap
from sync.codemap import CodeMapRules, apply_rules, import_csv, to_canonical, to_external, undo_rules
from sync.connections import ensure_connection
from sync.store import Store


def _rules(data):
    return CodeMapRules.model_validate(data)


@pytest.fixture
def conn(store: Store) -> int:
    with store.session() as s:
        return ensure_connection(s, "sap", "sap_b1")


def test_rules_apply_in_order_and_undo_in_reverse():
    rules = _rules({"sap": {"items": [{"op": "strip_prefix", "value": "C-"}, {"op": "zero_pad", "width": 6},
                                      {"op": "add_prefix", "value": "K"}, {"op": "upper"}]}}).rules_for("sap", "item")
    # canonical → external
    assert apply_rules(rules, "C-42a") == "K00042A"
    # external → canonical: undone in reverse, kept only if it leads back
    assert undo_rules(rules, "K00042A") == "C-42A"
    assert undo_rules(rules, "X00042") is None  # no K prefix: not a code these rules make
    assert undo_rules(rules, "k00042a") is None  # upper-case rule: a lower-case code cannot come from it


def test_regex_rule_needs_its_reverse_to_translate_back():
    forward_only = [codemap.RegexReplace(op="regex", pattern=r"^(\w+)-(\d+)$", replace=r"\2.\1")]
    assert apply_rules(forward_only, "TS-001") == "001.TS"
    assert undo_rules(forward_only, "001.TS") is None
    both = [codemap.RegexReplace(op="regex", pattern=r"^(\w+)-(\d+)$", replace=r"\2.\1",
                                 reverse_pattern=r"^(\d+)\.(\w+)$", reverse_replace=r"\2-\1")]
    assert undo_rules(both, "001.TS") == "TS-001"


def test_rules_are_validated_with_their_key_paths():
    with pytest.raises(ValidationError) as failure:
        _rules({"sap": {"items": [{"op": "zero_pad", "width": 0}, {"op": "regex", "pattern": "("}]}})
    locations = {tuple(e["loc"]) for e in failure.value.errors()}
    assert ("sap", "items", 0, "zero_pad", "width") in locations
    assert ("sap", "items", 1, "regex", "pattern") in locations


def test_the_configuration_reports_bad_rules_by_key_path(tmp_path):
    from erphub.config import ConfigInvalid, load

    file = tmp_path / "erphub.toml"
    file.write_text(textwrap.dedent("""
        [connections.sap]
        platform = "kingdee"
        url = "http://127.0.0.1:1/k3cloud/"
        acct_id = "x"
        username = "u"
        app_id = "a"
        app_secret = { env = "S" }

        [codemap.sap]
        items = [{ op = "add_prefix", value = "K-" }, { op = "zero_pad", width = 0 }, { op = "shout" }]

        [codemap.nowhere]
        items = []
    """), encoding="utf-8")
    with pytest.raises(ConfigInvalid) as failure:
        load(file, env={"S": "secret-value-1"})
    problems = dict(failure.value.problems)
    assert problems["codemap.sap.items[1].width"] == "should be greater than or equal to 1"
    assert problems["codemap.sap.items[2]"].startswith("unknown op")
    assert problems["codemap.nowhere"].startswith("no connection named 'nowhere'")
    # and a good file carries the rules
    file.write_text(file.read_text().replace(', { op = "zero_pad", width = 0 }, { op = "shout" }', "")
                    .replace("[codemap.nowhere]\nitems = []\n", ""), encoding="utf-8")
    settings = load(file, env={"S": "secret-value-1"})
    assert apply_rules(settings.codemap.rules_for("sap", "items"), "TS-1") == "K-TS-1"


def test_lookup_order_is_table_then_rules_then_identity(store, conn):
    rules = _rules({"sap": {"items": [{"op": "add_prefix", "value": "K-"}]}})
    with store.session() as s:
        idmap.bind(s, conn, "items", "TS-001", "SHIRT-1", "SHIRT-1")
        # the explicit table wins
        assert to_external(s, conn, "items", "TS-001", rules=rules) == "SHIRT-1"
        assert to_canonical(s, conn, "items", "SHIRT-1", rules=rules) == "TS-001"
        # then the rules
        assert to_external(s, conn, "items", "TS-002", rules=rules) == "K-TS-002"
        assert to_canonical(s, conn, "items", "K-TS-002", rules=rules) == "TS-002"
        assert to_canonical(s, conn, "items", "TS-002", rules=rules) is None  # rules cannot be undone
        # then identity, for entities (and connections) without rules
        assert to_external(s, conn, "warehouses", "WH01", rules=rules) == "WH01"
        assert to_canonical(s, conn, "warehouses", "WH01", rules=rules) == "WH01"


def test_configured_rules_are_used_when_none_are_passed(store, conn):
    codemap.configure({"sap": {"partners": [{"op": "lower"}]}})
    try:
        with store.session() as s:
            assert to_external(s, conn, "partners", "SUP-01") == "sup-01"
    finally:
        codemap.configure(None)


CSV_WITH_PROBLEMS = (
    "canonical_code,external_code\n"   # line 1
    "TS-001,A-1\n"                      # 2 ok
    "TS-002,\n"                         # 3 empty external
    "TS-003,A-3\n"                      # 4 ok
    "TS-001,A-1\n"                      # 5 duplicate of 2
    "TS-003,A-9\n"                      # 6 TS-003 mapped twice
    "TS-009,A-3\n"                      # 7 A-3 mapped twice
    "TS-004,A-4,extra\n"                # 8 wrong number of values
    "TS-005,HELD\n"                     # 9 conflicts with the stored mapping
)


def test_csv_import_reports_each_bad_row_by_line_and_writes_nothing(store, conn):
    with store.session() as s:
        idmap.bind(s, conn, "items", "OTHER", "HELD")
    with store.session() as s:
        report = import_csv(s, conn, "items", io.StringIO(CSV_WITH_PROBLEMS))
    assert not report.written and report.added == 0
    assert [p.line for p in report.problems] == [3, 5, 6, 7, 8, 9]
    messages = [str(p) for p in report.problems]
    assert "line 3: external_code is empty" in messages
    assert messages[1].startswith("line 5: duplicate of line 2")
    assert "on line 4" in messages[2] and "on line 4" in messages[3]
    assert "conflicts with the stored mapping 'OTHER'" in messages[5]
    with store.session() as s:
        assert [b.canonical_id for b in idmap.bindings(s, conn, "items")] == ["OTHER"]


def test_csv_import_with_partial_writes_the_good_rows(store, conn):
    with store.session() as s:
        idmap.bind(s, conn, "items", "OTHER", "HELD")
    with store.session() as s:
        report = import_csv(s, conn, "items", io.StringIO(CSV_WITH_PROBLEMS), partial=True)
    assert report.written and report.added == 2 and len(report.problems) == 6
    with store.session() as s:
        assert to_external(s, conn, "items", "TS-001") == "A-1"
        assert to_canonical(s, conn, "items", "A-3") == "TS-003"
        # importing the same good rows again changes nothing
        again = import_csv(s, conn, "items", io.StringIO("canonical_code,external_code\nTS-001,A-1\n"))
        assert again.written and again.added == 0 and again.unchanged == 1


def test_csv_without_the_columns_is_refused(store, conn):
    with store.session() as s:
        report = import_csv(s, conn, "items", io.StringIO("sku,code\nA,B\n"))
    assert not report.written and str(report.problems[0]).startswith("line 1: missing column(s) canonical_code")


@pytest.fixture
def cli(tmp_path, monkeypatch):
    from erphub.cli import app

    (tmp_path / "erphub.toml").write_text(textwrap.dedent(f"""
        [store]
        url = "sqlite:///{tmp_path / 'hub.db'}"

        [connections.sap]
        platform = "kingdee"
        url = "http://127.0.0.1:1/k3cloud/"
        acct_id = "x"
        username = "u"
        app_id = "a"
        app_secret = {{ env = "CODEMAP_TEST_SECRET" }}
    """), encoding="utf-8")
    monkeypatch.setenv("CODEMAP_TEST_SECRET", "codemap-secret-1")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, ["--config", str(tmp_path / "erphub.toml"), *args])

    yield run
    from connectors.logging import uninstall_redaction

    uninstall_redaction()
    logging.getLogger().handlers.clear()


def test_cli_import_refuses_bad_rows_unless_partial_then_lists_and_exports(cli, tmp_path):
    source = tmp_path / "map.csv"
    source.write_text("canonical_code,external_code\nTS-001,A-1\nTS-002,\nTS-003,A-3\n", encoding="utf-8")
    refused = cli("codemap", "import", str(source), "--connection", "sap", "--entity", "items")
    assert refused.exit_code == 1
    assert "line 3: external_code is empty" in refused.output and "nothing imported" in refused.output
    accepted = cli("codemap", "import", str(source), "--connection", "sap", "--entity", "items", "--partial")
    assert accepted.exit_code == 0, accepted.output
    assert "2 added" in accepted.output and "1 rejected" in accepted.output
    listed = cli("codemap", "list", "--connection", "sap")
    assert listed.exit_code == 0 and "TS-003" in listed.output and "A-3" in listed.output
    exported = cli("codemap", "export", "--connection", "sap")
    assert exported.exit_code == 0
    assert "canonical_code,external_code\nTS-001,A-1\nTS-003,A-3\n" in exported.output
    unknown = cli("codemap", "list", "--connection", "nope")
    assert unknown.exit_code == 2 and "no connection named 'nope'" in unknown.output
