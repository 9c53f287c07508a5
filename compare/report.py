"""Reports in three formats from one document model: HTML (Jinja2), Markdown and JSON.

The page chrome is shared. Any comparison report (a trial here, a reconciliation elsewhere) builds a
:class:`Document` — title, a banner, key/value facts and sections made of :class:`Text`,
:class:`Bullets`, :class:`Table` and :class:`Figure` blocks — and hands it to :func:`write_document`,
which writes ``<stem>.html`` (self-contained: charts are embedded as PNG data URIs), ``<stem>.md``
(charts written beside it under ``charts/``) and, when given, ``<stem>.json``. A report that needs
its own layout can extend ``templates/base.html`` (blocks ``title``, ``head``, ``content``) through
:func:`environment`.

The HTML carries a small inline script that, once the page has loaded, writes into
``#page-status`` how many images there are, how many decoded and how many script or resource errors
happened: a headless browser test reads it from the DOM.

:func:`trial_document` / :func:`write_trial_report` turn stored trial results and a scorecard into
the selection committee's report; it says plainly which candidates were measured against simulators.
"""
from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from compare import charts
from compare.scenario import PROCESS_LABELS, STANDARD_PROCESSES
from compare.scorecard import MEASURES, Scorecard

GENERATOR = "0.1"


# ---------------------------------------------------------------------------------------------
# The document model


@dataclass
class Text:
    text: str
    kind: str = field(default="text", init=False)


@dataclass
class Bullets:
    items: list[str]
    kind: str = field(default="bullets", init=False)


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]
    caption: str | None = None
    id: str | None = None
    numeric_columns: frozenset[int] = frozenset()
    row_keys: list[str] | None = None  # data-key of each row in the HTML (tests and scripts find rows by it)
    kind: str = field(default="table", init=False)

    def numeric(self, column: int) -> bool:
        return column in self.numeric_columns


@dataclass
class Figure:
    png: bytes
    alt: str
    filename: str  # under charts/ next to the Markdown
    caption: str | None = None
    id: str | None = None
    kind: str = field(default="figure", init=False)

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    @property
    def width(self) -> int:
        return _png_size(self.png)[0]

    @property
    def height(self) -> int:
        return _png_size(self.png)[1]


Block = Text | Bullets | Table | Figure


@dataclass
class Section:
    heading: str
    blocks: list[Block] = field(default_factory=list)
    id: str | None = None


@dataclass
class Document:
    title: str
    sections: list[Section] = field(default_factory=list)
    subtitle: str | None = None
    banner: str | None = None  # shown above everything, e.g. "measured against simulators"
    banner_ok: bool = False  # green instead of amber
    meta: list[tuple[str, str]] = field(default_factory=list)
    footer: str = ""

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]


def _png_size(png: bytes) -> tuple[int, int]:
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    return width, height


# ---------------------------------------------------------------------------------------------
# Rendering


def _md(value: Any) -> str:
    """A cell or line for Markdown: pipes escaped, newlines folded."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Jinja2 environment over ``compare/templates`` (autoescaped HTML). Extend ``base.html``."""
    return jinja2.Environment(loader=jinja2.PackageLoader("compare", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render_html(doc: Document, template: str = "document.html", **context: Any) -> str:
    return environment().get_template(template).render(doc=doc, generator=GENERATOR, lang="en", **context)


def render_markdown(doc: Document, *, figure_dir: str = "charts") -> str:
    """The same document as GitHub-flavoured Markdown; figures point at ``figure_dir/<filename>``."""
    lines = [f"# {_md(doc.title)}", ""]
    if doc.subtitle:
        lines += [_md(doc.subtitle), ""]
    if doc.banner:
        lines += [f"> **{_md(doc.banner)}**", ""]
    if doc.meta:
        lines += [f"- **{_md(k)}:** {_md(v)}" for k, v in doc.meta] + [""]
    for section in doc.sections:
        lines += [f"## {_md(section.heading)}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                lines += [_md(block.text), ""]
            elif isinstance(block, Bullets):
                lines += [f"- {_md(item)}" for item in block.items] + [""]
            elif isinstance(block, Table):
                if block.caption:
                    lines += [f"*{_md(block.caption)}*", ""]
                lines.append("| " + " | ".join(_md(h) for h in block.headers) + " |")
                lines.append("|" + "|".join("---:" if block.numeric(i) else "---" for i in range(len(block.headers)))
                             + "|")
                rows = block.rows or [["none"] + [""] * (len(block.headers) - 1)]
                lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
                lines.append("")
            elif isinstance(block, Figure):
                lines += [f"![{_md(block.alt)}]({figure_dir}/{block.filename})", ""]
                if block.caption:
                    lines += [f"*{_md(block.caption)}*", ""]
    if doc.footer:
        lines += ["---", "", _md(doc.footer), ""]
    return "\n".join(lines)


def write_document(doc: Document, out_dir: str | Path, *, stem: str = "report",
                   json_data: Any = None) -> dict[str, Path]:
    """Write ``<stem>.html``, ``<stem>.md`` (+ ``charts/*.png``) and ``<stem>.json`` when ``json_data``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    figures = doc.figures()
    if figures:
        chart_dir = out / "charts"
        chart_dir.mkdir(exist_ok=True)
        for figure in figures:
            (chart_dir / figure.filename).write_bytes(figure.png)
    written["html"] = out / f"{stem}.html"
    written["html"].write_text(render_html(doc), encoding="utf-8")
    written["markdown"] = out / f"{stem}.md"
    written["markdown"].write_text(render_markdown(doc), encoding="utf-8")
    if json_data is not None:
        written["json"] = out / f"{stem}.json"
        written["json"].write_text(json.dumps(json_data, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    return written


# ---------------------------------------------------------------------------------------------
# Formatting helpers


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


# ---------------------------------------------------------------------------------------------
# The trial report


def simulator_banner(systems: Mapping[str, Mapping[str, Any]]) -> tuple[str, bool]:
    simulated = [s for s, r in systems.items() if r.get("against_simulator")]
    real = [s for s in systems if s not in simulated]
    if simulated and not real:
        return (f"Every measured figure in this report was measured against simulators on loopback "
                f"({', '.join(simulated)}), not against the vendors' systems. They compare the connectors "
                "and the simulators' behaviour, not the vendors' production performance.", False)
    if simulated:
        return (f"Measured against simulators on loopback: {', '.join(simulated)}. Measured against real systems: "
                f"{', '.join(real)}. Figures of the two groups are not comparable.", False)
    return f"Every candidate was measured against a real (non-loopback) system: {', '.join(real)}.", True


def trial_document(results: Mapping[str, Any], scorecard: Scorecard, *,
                   weights_note: str | None = None) -> Document:
    trial = results["trial"]
    systems: Mapping[str, Mapping[str, Any]] = results["systems"]
    names = list(systems)
    banner, banner_ok = simulator_banner(systems)
    scenario = trial["scenario"]
    plan = results["plan"]
    doc = Document(
        title=f"Trial: {trial['trial']['name']}",
        subtitle=f"{len(names)} candidate(s), {plan['documents']} documents each — run {results['run_id']}",
        banner=banner, banner_ok=banner_ok,
        meta=[("run", results["run_id"]), ("started", results["started_at"]), ("finished", results["finished_at"]),
              ("trial file", results.get("trial_file") or "—"),
              ("delivery", plan["delivery"]),
              ("scored", datetime.now(timezone.utc).isoformat(timespec="seconds")
               + (f" ({weights_note})" if weights_note else ""))],
        footer=f"erphub trial report · format {results['format']}",
    )
    by_system = scorecard.by_system()

    # Ranking
    ranking = Table(["rank", "system", "platform", "measured against", "total (0–10)", "weight covered", "note"],
                    [], id="ranking", numeric_columns=frozenset({0, 4, 5}), row_keys=[])
    for s in scorecard.systems:
        info = systems[s.system]
        note = f"tied with {', '.join(s.tied_with)}" if s.tied_with else ""
        if info.get("failure"):
            note = (note + "; " if note else "") + "the run failed: " + str(info["failure"])
        ranking.rows.append([s.rank, s.system, info["platform"], _against(info), fmt(s.total), pct(s.coverage), note])
        ranking.row_keys.append(s.system)  # type: ignore[union-attr]
    doc.sections.append(Section("Ranking", [
        Text("The total is the weighted mean of every criterion's 0–10 score. Systems with equal totals (to two "
             "decimals) share a rank; no tie-break is applied."),
        ranking,
        Text(f"Missing scores: {_missing_policy(scorecard.missing_policy)}"),
    ], id="ranking-section"))

    # Criteria
    crit_table = Table(["criterion", "label", "kind", "weight", "how the 0–10 score is made"], [], id="criteria",
                       numeric_columns=frozenset({3}))
    for c in scorecard.criteria:
        crit_table.rows.append([c.key, c.label, c.kind, fmt(c.weight, 2), c.method])
    doc.sections.append(Section("Criteria and weights", [crit_table], id="criteria-section"))

    # Scores per criterion + radar
    keys = [c.key for c in scorecard.criteria]
    score_table = Table(["system"] + keys + ["total"], [], id="scores",
                        numeric_columns=frozenset(range(1, len(keys) + 2)))
    for s in scorecard.systems:
        row = [s.system]
        for key in keys:
            cs = s.criteria[key]
            cell = fmt(cs.score)
            if cs.raw is not None:
                cell += f" ({_raw(key, cs.raw)})"
            row.append(cell)
        row.append(fmt(s.total))
        score_table.rows.append(row)
    radar = charts.radar_chart([c.label for c in scorecard.criteria],
                               {s.system: [s.criteria[k].score for k in keys] for s in scorecard.systems})
    doc.sections.append(Section("Scores by criterion", [
        Text("Each cell is the 0–10 score; measured criteria show the measured value in brackets. "
             "On the radar chart a missing score is drawn at 0 and marked ×."),
        score_table,
        Figure(radar, "Radar chart of the criterion scores per system", "radar.png",
               caption="Criterion scores (0–10) per system", id="chart-radar"),
    ], id="scores-section"))

    # Ratings
    rated_rows = []
    for c in scorecard.criteria:
        if c.kind != "rated":
            continue
        for system in names:
            raters = c.ratings.get(system, {})
            if not raters:
                rated_rows.append([c.label, system, "—", "—", "no rating"])
                continue
            for rater, value in sorted(raters.items()):
                rated_rows.append([c.label, system, rater, fmt(float(value), 1),
                                   fmt(by_system[system].criteria[c.key].score)])
    if rated_rows:
        doc.sections.append(Section("Ratings by rater", [
            Text("Rated criteria are the plain mean over the raters who rated the system. The rater 'article' is the "
                 "seed article's evaluation table (流程用户体验评测表), applied by platform."),
            Table(["criterion", "system", "rater", "rating", "mean"], rated_rows, id="ratings",
                  numeric_columns=frozenset({3, 4})),
        ], id="ratings-section"))

    # Measured figures
    measured = Table(["system", "measured against", "sent", "succeeded", "not sent", "success rate",
                      "accuracy (positions)", "p50 ms", "p95 ms", "API calls / document", "throughput docs/s"],
                     [], id="measured", numeric_columns=frozenset(range(2, 11)))
    for system in names:
        info = systems[system]
        m, d, acc = info["measures"], info["documents"], info["accuracy"]
        measured.rows.append([
            system, _against(info), d["sent"], d["succeeded"], d["not_sent"], pct(m["success_rate"]),
            f"{pct(m['accuracy'])} ({acc.get('matching', 0)}/{acc.get('positions', 0)})",
            fmt(m["latency_p50_ms"], 1), fmt(m["latency_p95_ms"], 1), fmt(m["api_calls_per_document"]),
            fmt(m["throughput"], 1)])
    doc.sections.append(Section("Measured figures", [
        Text("Success rate = succeeded / sent. Accuracy = share of item-warehouse positions whose ending stock "
             "(read_balances) equals the expected ledger: opening stock read before the run plus the stock changes "
             "of the documents that succeeded. API calls per document = HTTP requests during the run (logins "
             "included) / documents sent. Throughput = succeeded documents / wall time of the run."),
        measured,
    ], id="measured-section"))

    # Latency
    processes = [p.value for p in STANDARD_PROCESSES if any(p.value in systems[s]["latency_ms"] for s in names)]
    lat_rows = []
    for system in names:
        for process in processes:
            entry = systems[system]["latency_ms"].get(process)
            if entry:
                lat_rows.append([system, PROCESS_LABELS.get(process, process), entry["n"], fmt(entry["p50"], 1),
                                 fmt(entry["p95"], 1)])
    latency_png = charts.latency_chart({s: {p: systems[s]["latency_ms"].get(p, {}).get("samples", [])
                                            for p in processes} for s in names}, processes)
    doc.sections.append(Section("Latency per process", [
        Text("Latency is the wall time of one push (until the stock is posted), per standard process; p50 and p95 "
             "are linear-interpolated percentiles over every document sent, successful or not."),
        Table(["system", "process", "documents", "p50 ms", "p95 ms"], lat_rows, id="latency",
              numeric_columns=frozenset({2, 3, 4})),
        Figure(latency_png, "Box plots of push latency per process and system", "latency.png",
               caption="Push latency per process (ms)", id="chart-latency"),
    ], id="latency-section"))

    # Errors
    outcomes = {s: {"succeeded": systems[s]["documents"]["succeeded"], **systems[s]["error_kinds"]} for s in names}
    error_rows = []
    for system in names:
        for e in systems[system]["errors"][:10]:
            error_rows.append([system, e.get("seq") or "—", e.get("process") or "—", e["kind"], e["message"]])
    kinds_table = Table(["system"] + ["succeeded"] + sorted({k for s in names for k in systems[s]["error_kinds"]}),
                        [], id="error-kinds")
    for system in names:
        kinds_table.rows.append([system, systems[system]["documents"]["succeeded"]]
                                + [systems[system]["error_kinds"].get(k, 0) for k in kinds_table.headers[2:]])
    kinds_table.numeric_columns = frozenset(range(1, len(kinds_table.headers)))
    doc.sections.append(Section("Errors", [
        Text("Error kinds are the connector error taxonomy (rejected, transient, ambiguous, rate_limited, auth, "
             "dependency_missing, contract_violation, config), plus 'unsupported' (the connector does not handle "
             "the process), 'not_posted' and 'bug' (an unexpected exception in the connector)."),
        kinds_table,
        Figure(charts.error_mix_chart(outcomes), "Stacked bars of succeeded documents and error kinds per system",
               "errors.png", caption="Outcome of every document sent", id="chart-errors"),
        Table(["system", "document", "process", "kind", "message"], error_rows, id="errors",
              caption="First errors per system (at most 10 shown)"),
    ], id="errors-section"))

    # Master data, opening and ending stock
    md_rows = []
    for system in names:
        for entity, entry in systems[system]["master_data"].items():
            if entry["how"] == "upserted":
                detail = (f"{entry['created']} created, {entry['updated_or_unchanged']} updated or unchanged, "
                          f"{entry['failed']} failed")
            else:
                detail = entry["detail"]
            md_rows.append([system, entity, entry["how"], entry["count"], detail])
    stock_blocks: list[Block] = [
        Text("Master data is written with upsert where the connector can; otherwise the system is assumed to be "
             "seeded with it already, as stated per entity below."),
        Table(["system", "entity", "how", "records", "detail"], md_rows, id="master-data",
              numeric_columns=frozenset({3})),
    ]
    differs = [f"{s}: the opening stock read from the system differs from the scenario's declared opening balances "
               f"at {systems[s].get('opening_differs_count', 0)} position(s) (the expected ledger starts from what "
               "was read)" for s in names if systems[s].get("opening_differs_count")]
    if differs:
        stock_blocks.append(Bullets(differs))
    mismatch_rows = [[s, m["sku"], m["warehouse"], m["expected"], m["actual"]]
                     for s in names for m in systems[s]["accuracy"].get("mismatches", [])[:20]]
    stock_blocks.append(Table(["system", "sku", "warehouse", "expected", "actual"], mismatch_rows, id="mismatches",
                              caption="Ending stock that differs from the expected ledger (at most 20 per system)",
                              numeric_columns=frozenset({3, 4})))
    doc.sections.append(Section("Master data and stock", stock_blocks, id="stock-section"))

    # Scenario
    mix = scenario["mix"]
    doc.sections.append(Section("Scenario", [
        Table(["setting", "value"], [
            ["documents per candidate", plan["documents"]], ["lines", plan["lines"]],
            ["seed", scenario["seed"]], ["concurrency (workers per candidate)", scenario["concurrency"]],
            ["duration cap (s)", scenario["duration_cap"]],
            ["items / warehouses", f"{plan['items']} / {plan['warehouses']}"],
            ["mix (weights)", ", ".join(f"{k} {v:g}" for k, v in mix.items())],
            ["planned per process", ", ".join(f"{k} {v}" for k, v in sorted(plan["by_process"].items()))],
        ], id="scenario"),
    ], id="scenario-section"))

    if scorecard.notes:
        doc.sections.append(Section("Notes", [Bullets(list(scorecard.notes))], id="notes-section"))
    return doc


def _against(info: Mapping[str, Any]) -> str:
    return "simulator (loopback)" if info.get("against_simulator") else "real system"


def _raw(key: str, value: float) -> str:
    measure = MEASURES.get(key)
    if measure is not None and measure.unit == "share":
        return pct(value)
    if measure is not None and measure.unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:.2f}"


def _missing_policy(policy: str) -> str:
    if policy == "zero":
        return "a criterion with no score (no rating, or not measurable) counts as 0."
    return ("a criterion with no score (no rating, or not measurable) is left out of that system's total; "
            "'weight covered' shows how much of the total weight was scored.")


def trial_json(results: Mapping[str, Any], scorecard: Scorecard) -> dict[str, Any]:
    """The JSON report: every stored figure (raw latencies left out) and the scorecard."""
    systems = {}
    for name, info in results["systems"].items():
        latency = {k: {kk: vv for kk, vv in v.items() if kk != "samples"} for k, v in info["latency_ms"].items()}
        systems[name] = {**info, "latency_ms": latency}
    return {"format": "erphub-trial-report/1", "run_id": results["run_id"], "trial": results["trial"],
            "plan": results["plan"], "started_at": results["started_at"], "finished_at": results["finished_at"],
            "simulators": [s for s, i in results["systems"].items() if i.get("against_simulator")],
            "systems": systems, "scorecard": scorecard.as_dict()}


def write_trial_report(results: Mapping[str, Any], scorecard: Scorecard, out_dir: str | Path, *,
                       weights_note: str | None = None) -> dict[str, Path]:
    doc = trial_document(results, scorecard, weights_note=weights_note)
    return write_document(doc, out_dir, stem="report", json_data=trial_json(results, scorecard))


__all__ = ["Block", "Bullets", "Document", "Figure", "Section", "Table", "Text", "environment", "fmt", "pct",
           "render_html", "render_markdown", "simulator_banner", "trial_document", "trial_json", "write_document",
           "write_trial_report"]


