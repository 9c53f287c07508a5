"""The selection committee's scorecard: measured and rated criteria on one 0–10 scale, weighted, ranked.

Rated criteria
    Scores 0–10 given by named raters per system. A system's score is the plain mean over the raters
    who rated it. By default the article's four criteria (流程灵活性 process flexibility, 数据可视化
    data visualisation, 上线速度 go-live speed, 性价比 cost-performance) are included, weight 1 each,
    with the article's own table as one rater called ``article`` for the platforms it names (金蝶云 =
    kingdee, SAP B1 = sap_b1, 用友U8 = yonyou, 简道云 = jiandaoyun). Users add raters and criteria.

Measured criteria
    Figures from the trial run, normalised to 0–10 by one of three stated methods:

    * ``target``: linear between a ``worst`` value (0) and a ``best`` value (10), clamped;
    * ``ratio``: against the best candidate, 10 × value / best (higher is better) or 10 × best /
      value (lower is better);
    * ``minmax``: 10 × (value − worst candidate) / (best candidate − worst candidate); when every
      candidate has the same value, each gets 10.

Total and ranking
    The weighted mean of the criterion scores, Σ wᵢ·sᵢ / Σ wᵢ, on 0–10. A missing score (no rater
    rated that system, or the figure could not be measured) is either left out of that system's
    total, whose weight coverage then shows below 100 % (``missing = "exclude"``, the default), or
    counted as 0 (``missing = "zero"``). Systems are ranked by total rounded to two decimals; equal
    totals share a rank (1, 1, 3) and are reported as a tie: no tie-break is invented.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Rating = Annotated[float, Field(ge=0, le=10)]
Method = Literal["target", "ratio", "minmax"]
_Strict = ConfigDict(extra="forbid", frozen=True)

# The article's "流程用户体验评测表": criterion -> product -> rating (0–10).
ARTICLE_CRITERIA: dict[str, str] = {
    "process_flexibility": "流程灵活性 process flexibility",
    "data_visualisation": "数据可视化 data visualisation",
    "go_live_speed": "上线速度 go-live speed",
    "cost_performance": "性价比 cost-performance",
}
ARTICLE_RATINGS: dict[str, dict[str, float]] = {
    "process_flexibility": {"简道云": 9, "金蝶云": 7, "用友U8": 6, "SAP B1": 7},
    "data_visualisation": {"简道云": 8, "金蝶云": 8, "用友U8": 7, "SAP B1": 8},
    "go_live_speed": {"简道云": 9, "金蝶云": 6, "用友U8": 5, "SAP B1": 6},
    "cost_performance": {"简道云": 9, "金蝶云": 7, "用友U8": 6, "SAP B1": 6},
}
PLATFORM_PRODUCTS: dict[str, str] = {"jiandaoyun": "简道云", "kingdee": "金蝶云", "yonyou": "用友U8",
                                     "sap_b1": "SAP B1"}
ARTICLE_RATER = "article"


@dataclass(frozen=True)
class Measure:
    label: str
    higher_is_better: bool
    unit: str
    method: Method
    best: float | None = None
    worst: float | None = None


# What the runner measures (keys of a system's ``measures`` in the results).
MEASURES: dict[str, Measure] = {
    "success_rate": Measure("成功率 success rate", True, "share", "target", best=1.0, worst=0.8),
    "accuracy": Measure("账实相符率 ending-stock accuracy", True, "share", "target", best=1.0, worst=0.8),
    "latency_p50_ms": Measure("latency p50", False, "ms", "ratio"),
    "latency_p95_ms": Measure("latency p95", False, "ms", "ratio"),
    "api_calls_per_document": Measure("API calls per document", False, "calls", "ratio"),
    "throughput": Measure("throughput", True, "documents/s", "ratio"),
}
DEFAULT_MEASURED_WEIGHTS: dict[str, float] = {
    "success_rate": 2, "accuracy": 2, "latency_p95_ms": 1, "api_calls_per_document": 1, "throughput": 1,
}


class RatedCriterion(BaseModel):
    """``[criteria.rated.<key>]``; ``ratings.<system>.<rater> = 0..10``."""

    model_config = _Strict
    label: str | None = None
    weight: float | None = Field(None, ge=0)  # None: 1, or the default criterion's weight
    ratings: dict[str, dict[str, Rating]] = Field(default_factory=dict)


class MeasuredCriterion(BaseModel):
    """``[criteria.measured.<key>]``, the key one of :data:`MEASURES`."""

    model_config = _Strict
    weight: float = Field(1.0, ge=0)
    method: Method | None = None
    best: float | None = None
    worst: float | None = None


class Criteria(BaseModel):
    """``[criteria]``: what counts and how much."""

    model_config = _Strict
    defaults: bool = Field(True, description="include the article's four rated criteria")
    article_ratings: bool = Field(True, description="the article's table as rater 'article'")
    missing: Literal["exclude", "zero"] = "exclude"
    products: dict[str, str] = Field(default_factory=dict,
                                     description="candidate -> article product name, when not by platform")
    rated: dict[str, RatedCriterion] = Field(default_factory=dict)
    measured: dict[str, MeasuredCriterion] | None = None  # None: DEFAULT_MEASURED_WEIGHTS

    @model_validator(mode="after")
    def _known(self) -> Criteria:
        for key, crit in (self.measured or {}).items():
            if key not in MEASURES:
                raise ValueError(f"measured.{key}: not a measured figure (known: {', '.join(MEASURES)})")
            measure = MEASURES[key]
            method = crit.method or measure.method
            best = crit.best if crit.best is not None else measure.best
            worst = crit.worst if crit.worst is not None else measure.worst
            if method == "target" and (best is None or worst is None or best == worst):
                raise ValueError(f"measured.{key}: method 'target' needs best and worst, and they must differ")
        overlap = set(self.rated) & set(self.measured or DEFAULT_MEASURED_WEIGHTS)
        if overlap:
            raise ValueError(f"rated.{sorted(overlap)[0]}: also a measured criterion; pick another key")
        for product in self.products.values():
            if product not in PLATFORM_PRODUCTS.values():
                raise ValueError(f"products: {product!r} is not in the article's table "
                                 f"({', '.join(PLATFORM_PRODUCTS.values())})")
        return self


@dataclass(frozen=True)
class Criterion:
    key: str
    label: str
    kind: Literal["rated", "measured"]
    weight: float
    method: str  # how the 0–10 score is made, in words
    # rated: system -> rater -> rating
    ratings: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    measure: Measure | None = None
    normalise: Method | None = None
    best: float | None = None
    worst: float | None = None


def effective_criteria(criteria: Criteria, platforms: Mapping[str, str],
                       weights: Mapping[str, float] | None = None) -> list[Criterion]:
    """The criteria that count, with defaults merged and ``weights`` (key -> weight) applied last."""
    rated: dict[str, dict[str, Any]] = {}
    if criteria.defaults:
        for key, label in ARTICLE_CRITERIA.items():
            ratings: dict[str, dict[str, float]] = {}
            if criteria.article_ratings:
                for system, platform in platforms.items():
                    product = criteria.products.get(system) or PLATFORM_PRODUCTS.get(platform)
                    if product is not None:
                        ratings[system] = {ARTICLE_RATER: ARTICLE_RATINGS[key][product]}
            rated[key] = {"label": label, "weight": 1.0, "ratings": ratings}
    for key, given in criteria.rated.items():
        entry = rated.setdefault(key, {"label": key, "weight": 1.0, "ratings": {}})
        if given.label:
            entry["label"] = given.label
        if given.weight is not None:
            entry["weight"] = given.weight
        for system, by_rater in given.ratings.items():
            entry["ratings"].setdefault(system, {}).update(by_rater)
    out = [Criterion(key, e["label"], "rated", e["weight"], "mean of the raters' 0–10 ratings",
                     ratings=e["ratings"]) for key, e in rated.items()]
    measured = criteria.measured if criteria.measured is not None else {
        k: MeasuredCriterion(weight=w) for k, w in DEFAULT_MEASURED_WEIGHTS.items()}
    for key, crit in measured.items():
        measure = MEASURES[key]
        method = crit.method or measure.method
        best = crit.best if crit.best is not None else measure.best
        worst = crit.worst if crit.worst is not None else measure.worst
        out.append(Criterion(key, measure.label, "measured", crit.weight, describe_method(method, measure, best, worst),
                             measure=measure, normalise=method, best=best, worst=worst))
    if weights:
        known = {c.key for c in out} | set(MEASURES)
        unknown = sorted(set(weights) - known)
        if unknown:
            raise ValueError(f"--weights: {unknown[0]!r} is not a criterion (known: {', '.join(sorted(known))})")
        adjusted = []
        for c in out:
            adjusted.append(_with_weight(c, weights[c.key]) if c.key in weights else c)
        for key in weights.keys() - {c.key for c in out}:  # a measured figure not counted so far
            m = MEASURES[key]
            adjusted.append(Criterion(key, m.label, "measured", weights[key], describe_method(m.method, m, m.best,
                                      m.worst), measure=m, normalise=m.method, best=m.best, worst=m.worst))
        out = adjusted
    for c in out:
        if c.weight < 0:
            raise ValueError(f"{c.key}: weight must be 0 or more")
    return [c for c in out if c.weight > 0]


def _with_weight(c: Criterion, weight: float) -> Criterion:
    return Criterion(c.key, c.label, c.kind, float(weight), c.method, c.ratings, c.measure, c.normalise, c.best,
                     c.worst)


def describe_method(method: str, measure: Measure, best: float | None, worst: float | None) -> str:
    better = "higher" if measure.higher_is_better else "lower"
    if method == "target":
        return f"target: {worst:g} → 0, {best:g} → 10, linear, clamped ({better} is better)"
    if method == "ratio":
        return ("ratio to the best candidate: 10 × value / best" if measure.higher_is_better
                else "ratio to the best candidate: 10 × best / value") + f" ({better} is better)"
    return f"min–max across candidates: worst → 0, best → 10; all equal → 10 ({better} is better)"


def parse_weights(text: str) -> dict[str, float]:
    """``success_rate=3,go_live_speed=0.5`` → ``{"success_rate": 3.0, "go_live_speed": 0.5}``."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{part!r}: write criterion=weight")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{key.strip()}: {value!r} is not a number") from None
        if number < 0:
            raise ValueError(f"{key.strip()}: a weight must be 0 or more")
        weights[key.strip()] = number
    return weights


# ---------------------------------------------------------------------------------------------
# Normalisation


def normalise(criterion: Criterion, values: Mapping[str, float | None]) -> dict[str, float | None]:
    """0–10 scores of one measured criterion for every system (None where the value is missing)."""
    assert criterion.measure is not None
    higher = criterion.measure.higher_is_better
    present = {s: float(v) for s, v in values.items() if v is not None}
    out: dict[str, float | None] = {s: None for s in values}
    if not present:
        return out
    if criterion.normalise == "target":
        best, worst = float(criterion.best), float(criterion.worst)  # type: ignore[arg-type]
        for s, v in present.items():
            out[s] = _clamp(10 * (v - worst) / (best - worst))
    elif criterion.normalise == "ratio":
        best = max(present.values()) if higher else min(present.values())
        for s, v in present.items():
            if higher:
                out[s] = 10.0 if best <= 0 else _clamp(10 * v / best)
            else:
                out[s] = 10.0 if v <= 0 else (0.0 if best < 0 else _clamp(10 * best / v))
    else:  # minmax
        lo, hi = min(present.values()), max(present.values())
        for s, v in present.items():
            if hi == lo:
                out[s] = 10.0
            else:
                out[s] = _clamp(10 * ((v - lo) if higher else (hi - v)) / (hi - lo))
    return out


def _clamp(x: float) -> float:
    return max(0.0, min(10.0, x))


# ---------------------------------------------------------------------------------------------
# Scoring


@dataclass
class CriterionScore:
    key: str
    score: float | None  # 0–10, None when missing
    raw: float | None = None  # measured value
    raters: dict[str, float] = field(default_factory=dict)
    missing: str | None = None  # why there is no score


@dataclass
class SystemScore:
    system: str
    total: float | None
    coverage: float  # share of the total weight that had a score
    rank: int = 0
    tied_with: list[str] = field(default_factory=list)
    criteria: dict[str, CriterionScore] = field(default_factory=dict)


@dataclass
class Scorecard:
    criteria: list[Criterion]
    systems: list[SystemScore]  # in rank order
    missing_policy: str
    notes: list[str] = field(default_factory=list)

    def by_system(self) -> dict[str, SystemScore]:
        return {s.system: s for s in self.systems}

    def as_dict(self) -> dict[str, Any]:
        return {
            "missing_policy": self.missing_policy,
            "method": "weighted mean of 0–10 criterion scores; equal totals (2 decimals) share a rank",
            "criteria": [{"key": c.key, "label": c.label, "kind": c.kind, "weight": c.weight, "method": c.method,
                          "ratings": {s: dict(r) for s, r in c.ratings.items()} if c.kind == "rated" else None}
                         for c in self.criteria],
            "ranking": [{"rank": s.rank, "system": s.system, "total": s.total, "coverage": s.coverage,
                         "tied_with": s.tied_with,
                         "criteria": {k: asdict(v) for k, v in s.criteria.items()}} for s in self.systems],
            "notes": list(self.notes),
        }


def score(systems: Sequence[str], measures: Mapping[str, Mapping[str, float | None]],
          criteria: Sequence[Criterion], *, missing: Literal["exclude", "zero"] = "exclude") -> Scorecard:
    """Score and rank ``systems``; ``measures`` is system -> measured figure -> value (None: not measured)."""
    per_system: dict[str, dict[str, CriterionScore]] = {s: {} for s in systems}
    notes: list[str] = []
    for c in criteria:
        if c.kind == "rated":
            for s in systems:
                raters = dict(c.ratings.get(s, {}))
                if raters:
                    per_system[s][c.key] = CriterionScore(c.key, sum(raters.values()) / len(raters), raters=raters)
                else:
                    per_system[s][c.key] = CriterionScore(c.key, None, missing="no rater rated this system")
        else:
            raw = {s: _value(measures.get(s, {}), c.key) for s in systems}
            scores = normalise(c, raw)
            for s in systems:
                per_system[s][c.key] = CriterionScore(
                    c.key, scores[s], raw=raw[s], missing=None if raw[s] is not None else "not measured")
    results: list[SystemScore] = []
    total_weight = sum(c.weight for c in criteria)
    for s in systems:
        num = den = 0.0
        for c in criteria:
            cs = per_system[s][c.key]
            if cs.score is None:
                notes.append(f"{s}: {c.key} {cs.missing}; "
                             + ("left out of its total" if missing == "exclude" else "counted as 0"))
                if missing == "zero":
                    den += c.weight
                continue
            num += c.weight * cs.score
            den += c.weight
        covered = sum(c.weight for c in criteria if per_system[s][c.key].score is not None)
        total = round(num / den, 4) if den > 0 else None
        results.append(SystemScore(s, total, round(covered / total_weight, 4) if total_weight else 0.0,
                                   criteria=per_system[s]))
    _rank(results)
    for r in results:
        if r.tied_with:
            notes.append(f"{r.system}: tied at {r.total:.2f} with {', '.join(r.tied_with)} (rank {r.rank} shared)")
    return Scorecard(list(criteria), results, missing, notes)


def _value(figures: Mapping[str, Any], key: str) -> float | None:
    value = figures.get(key)
    return None if value is None else float(value)


def _rank(results: list[SystemScore]) -> None:
    """Sort by rounded total (None last), competition ranking, ties named."""
    def shown(r: SystemScore) -> float | None:
        return None if r.total is None else round(r.total, 2)

    results.sort(key=lambda r: (shown(r) is None, -(shown(r) or 0.0), r.system))
    for index, r in enumerate(results):
        same = [o for o in results if shown(o) == shown(r)]
        r.rank = results.index(same[0]) + 1 if shown(r) is not None else index + 1
        r.tied_with = [o.system for o in same if o is not r] if shown(r) is not None else []
