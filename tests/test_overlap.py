"""Idempotent under overlap: two copies of each chain step run at once on PostgreSQL (a duplicate
request, a re-delivery while the first copy still runs) leave one result and neither copy fails.

Each step is run twice at once from a barrier, after the steps before it ran once; the database at the
end must hold the rows of the same chain run once, one step after the other.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from brain_tasks.brain.db import dispose_engine, make_engine
from brain_tasks.service.steps.collect import collect
from brain_tasks.market.sources import FreqtradeSource
from brain_tasks.service.chain import ChainState, ModelOutcome
from brain_tasks.service.steps import choose, compare, explain, promote, train
from brain_tasks.settings import from_environ
from brain_tasks.vocabulary import Status
from tests import chaos
from tests.workers import REPO

pytestmark = [pytest.mark.postgres]

SYMBOL = "ETH/BTC"
MODELS = ["baseline"]
DAY = dt.date(2018, 1, 30)
COPIES = 2
# Wall-clock, CPU-time and "was it me" fields of a step's output: the only ones two copies may disagree on.
PER_COPY = {"seconds", "cpu_s", "train_cpu_s", "importance_cpu_s", "trained", "reason", "recorded", "resolved",
            "stored"}


def one_result(outputs: list[Any]) -> Any:
    """The copies' common output; fails on an exception, a failed status or outputs that disagree."""
    for o in outputs:
        assert not isinstance(o, BaseException), f"a copy raised {type(o).__name__}: {o}"
        assert o.get("status", Status.OK) == Status.OK, o
    same = [{k: v for k, v in o.items() if k not in PER_COPY} for o in outputs]
    assert all(s == same[0] for s in same), same
    return outputs[0]


def _steps(engine, settings) -> list[tuple[str, Callable[[Any], Callable[[], Any]]]]:
    source = FreqtradeSource(REPO / "sample" / "freqtrade-testdata", name="freqtrade")
    return [
        ("collect_candles", lambda _prev: lambda: collect(engine, source, "candles", SYMBOL, timeframe="5m",
                                                          now="2018-02-01")),
        ("train_symbol", lambda _prev: lambda: [train.train_symbol(engine, settings, SYMBOL, m, DAY).to_json()
                                                for m in MODELS]),
        ("compare_models", lambda prev: lambda: compare.compare_models(engine, settings, _trained(prev)).to_json()),
        ("compute_importance", lambda prev: lambda: _step(explain.compute_importance, engine, settings, prev)),
        ("check_rollback", lambda prev: lambda: _step(promote.check_rollback, engine, settings, prev)),
        ("select_model", lambda prev: lambda: _step(choose.select_model, engine, settings, prev)),
    ]


def _trained(outcomes: list[dict]) -> ChainState:
    state = ChainState.start(SYMBOL, DAY)
    for o in outcomes:
        state = state.with_model(ModelOutcome.from_json(o))
    return state


def _step(step: Callable[..., ChainState], engine: Any, settings: Any, prev: dict) -> dict:
    return step(engine, settings, ChainState.from_json(prev)).to_json()


@pytest.fixture
def two_brains(pg_url: str) -> Iterator[tuple[str, str]]:
    urls = chaos.fresh_brain(pg_url), chaos.fresh_brain(pg_url)
    yield urls
    for url in urls:
        dispose_engine(url)


def _chain(url: str, copies: int) -> dict[str, str]:
    """Run the chain with `copies` copies of each step at once; {step: what went wrong} (empty: nothing)."""
    engine, settings = make_engine(url), from_environ({"BRAIN_DATABASE_URL": url})
    problems: dict[str, str] = {}
    prev: Any = None
    for name, step in _steps(engine, settings):
        outputs = chaos.at_once(step(prev), copies)
        # A step that failed in one copy still hands the other copy's output on, so every later step
        # is exercised too.
        good = [o for o in outputs if not isinstance(o, BaseException)]
        prev = good[0] if good else prev
        try:
            if name == "train_symbol":  # one output per model type
                for per_model in zip(*good):
                    one_result(list(per_model))
                assert len(good) == copies, next(o for o in outputs if isinstance(o, BaseException))
            else:
                one_result(outputs)
        except AssertionError as exc:
            problems[name] = str(exc).splitlines()[0]
    return problems


def test_two_copies_of_every_chain_step_at_once_leave_one_result(two_brains):
    reference, overlapped = two_brains
    assert _chain(reference, copies=1) == {}
    assert _chain(overlapped, copies=COPIES) == {}
    chaos.assert_same_rows(reference, overlapped)
