"""Scorecard arithmetic: normalisation methods, rater means, weighted totals, ties and missing scores."""
from __future__ import annotations

import pytest

from compare.scorecard import (
    ARTICLE_RATER,
    Criteria,
    MEASURES,
    Criterion,
    effective_criteria,
    normalise,
    parse_weights,
    score,
)


def measured(key: str, method: str, weight: float = 1.0, best: float | None = None,
             worst: float | None = None) -> Criterion:
    return Criterion(key, key, "measured", weight, method, measure=MEASURES[key], normalise=method,  # type: ignore[arg-type]
                     best=best, worst=worst)


def rated(key: str, ratings: dict[str, dict[str, float]], weight: float = 1.0) -> Criterion:
    return Criterion(key, key, "rated", weight, "mean", ratings=ratings)


def test_minmax_maps_worst_to_0_and_best_to_10_in_the_right_direction():
    higher = normalise(measured("throughput", "minmax"), {"a": 10.0, "b": 20.0, "c": 15.0})
    assert higher == {"a": 0.0, "b": 10.0, "c": 5.0}
    lower = normalise(measured("latency_p95_ms", "minmax"), {"a": 100.0, "b": 300.0, "c": 200.0})
    assert lower == {"a": 10.0, "b": 0.0, "c": 5.0}
    # all equal: every candidate gets 10; a missing value stays missing
    assert normalise(measured("throughput", "minmax"), {"a": 5.0, "b": 5.0, "c": None}) == {"a": 10.0, "b": 10.0,
                                                                                            "c": None}


def test_ratio_is_relative_to_the_best_candidate():
    assert normalise(measured("api_calls_per_document", "ratio"), {"a": 2.0, "b": 4.0}) == {"a": 10.0, "b": 5.0}
    assert normalise(measured("throughput", "ratio"), {"a": 50.0, "b": 100.0}) == {"a": 5.0, "b": 10.0}


def test_target_is_linear_between_worst_and_best_and_clamped():
    c = measured("success_rate", "target", best=1.0, worst=0.8)
    scores = normalise(c, {"a": 1.0, "b": 0.9, "c": 0.5})
    assert scores["a"] == 10.0 and scores["b"] == pytest.approx(5.0) and scores["c"] == 0.0


def test_raters_are_averaged_and_weights_make_the_total():
    criteria = [rated("flex", {"a": {"x": 8, "y": 6}, "b": {"x": 9}}, weight=1),
                measured("success_rate", "target", weight=3, best=1.0, worst=0.0)]
    card = score(["a", "b"], {"a": {"success_rate": 1.0}, "b": {"success_rate": 0.5}}, criteria)
    a, b = card.by_system()["a"], card.by_system()["b"]
    assert a.criteria["flex"].score == 7.0
    assert a.total == pytest.approx((7 * 1 + 10 * 3) / 4)  # 9.25
    assert b.total == pytest.approx((9 * 1 + 5 * 3) / 4)  # 6.0
    assert [s.system for s in card.systems] == ["a", "b"] and [s.rank for s in card.systems] == [1, 2]


def test_equal_totals_share_a_rank_and_are_named_as_a_tie():
    criteria = [rated("flex", {"a": {"x": 7}, "b": {"x": 7}, "c": {"x": 9}})]
    card = score(["b", "a", "c"], {}, criteria)
    assert [(s.system, s.rank) for s in card.systems] == [("c", 1), ("a", 2), ("b", 2)]
    assert card.by_system()["a"].tied_with == ["b"] and card.by_system()["c"].tied_with == []
    assert any("tied" in note and "rank 2 shared" in note for note in card.notes)


def test_a_missing_rating_is_left_out_or_counted_as_zero_as_chosen():
    criteria = [rated("flex", {"a": {"x": 8}, "b": {"x": 8}}), rated("viz", {"a": {"x": 4}})]
    excluded = score(["a", "b"], {}, criteria, missing="exclude")
    assert excluded.by_system()["b"].total == 8.0 and excluded.by_system()["b"].coverage == 0.5
    assert excluded.systems[0].system == "b"
    zero = score(["a", "b"], {}, criteria, missing="zero")
    assert zero.by_system()["b"].total == 4.0 and zero.by_system()["a"].total == 6.0
    assert zero.systems[0].system == "a"
    assert any("b: viz no rater rated this system" in note for note in zero.notes)


def test_a_system_with_no_score_at_all_ranks_last_without_a_total():
    card = score(["a", "b"], {}, [rated("flex", {"a": {"x": 1}})])
    assert card.systems[-1].system == "b" and card.systems[-1].total is None


def test_the_article_table_is_the_default_rated_set_by_platform():
    chosen = effective_criteria(Criteria(), {"kd": "kingdee", "sap": "sap_b1", "ref": "reference"})
    by_key = {c.key: c for c in chosen}
    assert [c.key for c in chosen if c.kind == "rated"] == ["process_flexibility", "data_visualisation",
                                                            "go_live_speed", "cost_performance"]
    assert by_key["go_live_speed"].ratings == {"kd": {ARTICLE_RATER: 6}, "sap": {ARTICLE_RATER: 6}}
    assert by_key["cost_performance"].ratings["kd"][ARTICLE_RATER] == 7
    assert "ref" not in by_key["process_flexibility"].ratings
    # the default measured set
    assert {c.key for c in chosen if c.kind == "measured"} == {"success_rate", "accuracy", "latency_p95_ms",
                                                               "api_calls_per_document", "throughput"}


def test_user_criteria_add_raters_and_weights_override_and_zero_drops():
    criteria = Criteria.model_validate({
        "article_ratings": False,
        "rated": {"go_live_speed": {"weight": 3, "ratings": {"kd": {"li": 8}}},
                  "support": {"label": "本地支持", "ratings": {"kd": {"li": 6}}}},
        "measured": {"success_rate": {"weight": 2}},
    })
    chosen = effective_criteria(criteria, {"kd": "kingdee"}, weights={"support": 0, "throughput": 1})
    by_key = {c.key: c for c in chosen}
    assert by_key["go_live_speed"].weight == 3 and by_key["go_live_speed"].ratings == {"kd": {"li": 8}}
    assert "support" not in by_key
    assert by_key["throughput"].weight == 1 and by_key["success_rate"].weight == 2
    with pytest.raises(ValueError, match="not a criterion"):
        effective_criteria(criteria, {"kd": "kingdee"}, weights={"speed": 1})


def test_weights_parse_from_the_command_line():
    assert parse_weights("success_rate=3, go_live_speed=0.5") == {"success_rate": 3.0, "go_live_speed": 0.5}
    for bad in ("success_rate", "x=abc", "x=-1"):
        with pytest.raises(ValueError):
            parse_weights(bad)
