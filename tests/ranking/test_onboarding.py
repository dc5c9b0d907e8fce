"""Onboarding: stated categories and user segments on real ML-100K, the fallback named, clear
errors; the serving helper over a catalogue; the evaluation's new-user cut never leaks."""

from __future__ import annotations

import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.data.dataset import EventData
from shoprec.data.loaders import load_movielens_100k
from shoprec.evaluation.onboarding import evaluate_onboarding, list_metrics, new_users
from shoprec.ranking.onboarding import OnboardingPopularity, age_band
from shoprec.serving.catalog import ItemCatalog
from shoprec.serving.cold_start import Preferences, onboarding_items, preferences_from


@pytest.fixture(scope="module")
def ml100k() -> EventData:
    return load_movielens_100k()


@pytest.fixture(scope="module")
def table(ml100k: EventData) -> OnboardingPopularity:
    return OnboardingPopularity(ml100k.events, ml100k.items, ml100k.users)


def test_answers_differ_by_stated_category_and_stay_inside_it(ml100k: EventData, table) -> None:
    category = dict(zip(ml100k.items[S.ITEM_ID], ml100k.items[S.CATEGORY]))
    comedy, horror = table.recommend(10, ["Comedy"]), table.recommend(10, ["Horror"])
    assert not set(comedy.items) & set(horror.items)
    assert {category[i] for i in comedy.items} == {"Comedy"} and {category[i] for i in horror.items} == {"Horror"}
    assert comedy.fallback == "stated_categories" and "Comedy" in comedy.reason
    assert comedy.scores == sorted(comedy.scores, reverse=True)


def test_segment_changes_the_answer_and_is_named(ml100k: EventData, table) -> None:
    everyone = table.recommend(10)
    young_women = table.recommend(10, attributes={"age": 22, "gender": "F"})
    assert everyone.fallback == "popular" and young_women.fallback == "segment"
    assert young_women.segment == {"age": "18-24", "gender": "F"} and young_women.items != everyone.items
    both = table.recommend(10, ["Drama"], {"gender": "F"})
    assert both.fallback == "categories_in_segment" and "gender F" in both.reason


def test_a_small_segment_backs_off_and_says_what_was_left_out() -> None:
    events = pd.DataFrame({S.USER_ID: ["u1", "u2", "u3", "u3"], S.ITEM_ID: ["a", "b", "b", "c"]})
    users = pd.DataFrame({S.USER_ID: ["u1", "u2", "u3"], "age": [30, 31, 33], "gender": ["F", "M", "M"]})
    table = OnboardingPopularity(events, None, users, min_users=2)
    answer = table.recommend(3, attributes={"age": 30, "gender": "F"})  # only u1 is a 25-34 F
    assert answer.segment == {"age": "25-34"} and "gender left out" in answer.reason
    assert answer.items[0] == "b"  # two of the three 25-34 users touched b


def test_unknown_categories_and_attributes_are_named(table) -> None:
    with pytest.raises(ValueError, match="unknown category 'Comedie'"):
        table.recommend(10, ["Comedie"])
    with pytest.raises(ValueError, match="unknown user attribute 'zip'"):
        table.recommend(10, attributes={"zip": "10001"})
    with pytest.raises(ValueError, match="unknown occupation 'astronaut'"):
        table.recommend(10, attributes={"occupation": "astronaut"})
    assert age_band(17) == "<18" and age_band(56) == "56+" and age_band("40") == "35-44"


def test_serving_helper_with_a_catalogue_only() -> None:
    frame = pd.DataFrame({S.CATEGORY: ["x", "x", "y", "y"], "popular": [1.0, 5.0, 3.0, 9.0]},
                         index=pd.Index(["a", "b", "c", "d"], name=S.ITEM_ID))
    catalog = ItemCatalog(frame)
    fallback, items = onboarding_items(3, preferences_from({"categories": ["x"]}), catalog=catalog)
    assert fallback == "stated_categories" and [i.item_id for i in items] == ["b", "a"]
    assert items[0].reason == "popular in x"
    fallback, items = onboarding_items(2, Preferences(("x", "y")), catalog=catalog, exclude={"d"})
    assert [i.item_id for i in items] == ["b", "c"]
    with pytest.raises(ValueError, match="'z'"):
        onboarding_items(2, Preferences(("z",)), catalog=catalog)
    with pytest.raises(ValueError, match="no users table"):
        onboarding_items(2, Preferences((), (("age", 30),)), catalog=catalog)
    with pytest.raises(ValueError, match="preferences"):
        preferences_from({"categorys": ["x"]})


def test_new_users_are_cut_by_first_event_and_never_leak(ml100k: EventData) -> None:
    split = new_users(ml100k, share=0.2, first_n=5)
    first = ml100k.events.groupby(S.USER_ID)[S.TIMESTAMP].min()
    assert (split.known[S.TIMESTAMP] < split.cut).all()
    assert not set(split.known[S.USER_ID]) & set(split.users)  # new users have nothing before the cut
    assert all(first[u] >= split.cut for u in split.users) and all(len(t) <= 5 for t in split.targets)


def test_onboarding_evaluation_rows(ml100k: EventData) -> None:
    rows = evaluate_onboarding(ml100k, bootstrap=50)
    assert rows[0]["method"] == "popular" and rows[0]["delta"] == 0.0
    assert {r["method"] for r in rows} >= {"segment: age", "segment: age + gender + occupation (backoff)"}
    assert all(r["users"] == rows[0]["users"] > 0 for r in rows)
    assert list_metrics(["a", "b", "c"], ["b"], 3) == (pytest.approx(1 / 3), 1.0, pytest.approx(1 / 1.5849625))
