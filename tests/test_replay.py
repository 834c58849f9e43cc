"""Replays through the service layer on small synthetic markets: same rows twice with nothing trained the
second time, live state untouched, registry views apart, point in time, bad input refused, short
histories skipped, the command line on the embedded worker."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from brain_tasks.brain import registry, replays, runs, store
from brain_tasks.brain.db import make_engine
from brain_tasks.errors import BrainError
from brain_tasks.intake import RequestError
from brain_tasks.market.synthetic import SyntheticSource
from brain_tasks.service import replay_run
from brain_tasks.service.replay_plan import plan_replay
from brain_tasks.settings import from_environ
from brain_tasks.vocabulary import Origin, Status
from tests import snapshots
from tests.chains import run_chain
from tests.replay_chain import run_replay
from tests.workers import brain_env

SYMBOL = "SYN/USD"
LIVE_TABLES = ("champion_history", "regime_choices", "signals", "rollback_logs", "model_comparisons")
WINDOW = ("2024-01-08", "2024-01-10")


def store_market(engine, symbols, seed: int = 3, start: str = "2024-01-01", end: str = "2024-01-11",  # noqa: ANN001
                 exchange: str = "freqtrade") -> None:
    src = SyntheticSource(seed, start=start, end=end)
    for s in symbols:
        store.upsert(engine, "candles", src.fetch_candles(s, "5m").assign(exchange=exchange, symbol=s, timeframe="5m"))


@pytest.fixture
def market(brain_db_url):  # noqa: ANN001
    engine = make_engine(brain_db_url)
    store_market(engine, [SYMBOL])
    return engine, from_environ({"BRAIN_DATABASE_URL": brain_db_url})


def _replay_tables(engine) -> dict[str, pd.DataFrame]:  # noqa: ANN001
    snap = snapshots.snapshot(engine, snapshots.wall_clock_columns())
    return {t: snap[t] for t in ("replays", "replay_decisions", "replay_results")}


def test_a_replay_twice_gives_the_same_rows_trains_nothing_and_leaves_live_state_alone(market):
    engine, settings = market
    live = run_chain(engine, settings, SYMBOL, ["baseline"], dt.date(2024, 1, 10))
    assert live.rollback["action"] == "promote"
    before = snapshots.snapshot(engine, snapshots.wall_clock_columns())
    models_before = registry.registry_table(engine)

    plan, first, trainings = run_replay(engine, settings, [SYMBOL], ["baseline"], *WINDOW)
    assert first["state"] == Status.OK and all(t["trained"] for t in trainings) and len(trainings) == 3
    rows = _replay_tables(engine)
    after = snapshots.snapshot(engine, snapshots.wall_clock_columns())
    for table in LIVE_TABLES:
        pd.testing.assert_frame_equal(before[table], after[table], check_exact=True)
    # The champion and the retrain's version are as they were; the replay's versions are the replay's.
    reg = after["model_registry"].set_index("version")
    assert reg.loc[1, "status"] == "champion" and reg.loc[1, "origin"] == Origin.RETRAIN
    assert set(reg.drop(index=1)["origin"]) == {Origin.REPLAY} and set(reg.drop(index=1)["status"]) == {"candidate"}
    pd.testing.assert_frame_equal(models_before.drop(columns=["updated_at"]),
                                  registry.registry_table(engine).drop(columns=["updated_at"]))
    assert registry.symbols_with_models(engine) == [SYMBOL]

    plan2, second, trainings2 = run_replay(engine, settings, [SYMBOL], ["baseline"], *WINDOW, attempt_id="attempt-2")
    assert plan2.replay_id == plan.replay_id and not any(t["trained"] for t in trainings2)
    again = _replay_tables(engine)
    for table in rows:
        snapshots.assert_same_database({table: rows[table]}, {table: again[table]})
    assert runs.run_status(engine, plan.replay_id)["state"] == Status.OK
    shown = replay_run.show(engine, plan.replay_id)
    assert {"brain", "newest:baseline", "best_composite", "flat", "buy_and_hold"} <= set(shown["policies"])
    for name, m in shown["policies"].items():
        assert {"sharpe", "total_return", "max_drawdown"} <= set(m) and (name == "brain" or "p_value" in m)
    assert {"replay_id", "pbo", "dsr", "decisions"} <= set(shown)
    assert set(shown["decisions"][0]) >= {"symbol", "step", "policy", "regime", "model_type", "version", "action",
                                          "reason"}


def test_a_walk_that_gets_no_training_outcome_finds_the_versions_by_identity(market):
    """The trainings' outcomes travel along each model type's chain; should none arrive, the walk finds
    every step's version by (symbol, model type, as-of day, config): the same versions, hence the same
    inputs digest, so the stored decisions and results stand."""
    from brain_tasks.service.replay_walk import walk_symbol

    engine, settings = market
    plan, _, _ = run_replay(engine, settings, [SYMBOL], ["baseline"], *WINDOW)
    rows = _replay_tables(engine)
    state = walk_symbol(engine, settings, plan, SYMBOL, [])
    stored = replays.get_replay(engine, plan.replay_id)["summary"]["symbols"][SYMBOL]
    assert state.ok and state.replay == {k: v for k, v in stored.items() if k != "state"}
    assert state.replay_run["reused"] and state.replay_run["n_trained"] == 0
    assert "replay_run" not in state.details()  # what a walk cost is never recorded
    again = _replay_tables(engine)
    for table in rows:
        snapshots.assert_same_database({table: rows[table]}, {table: again[table]})


def test_a_retrain_that_reaches_a_replays_training_adopts_the_version(market):
    engine, settings = market
    run_replay(engine, settings, [SYMBOL], ["baseline"], *WINDOW)
    assert registry.registry_table(engine).empty
    state = run_chain(engine, settings, SYMBOL, ["baseline"], dt.date(2024, 1, 9))  # the last step's identity
    assert not state.models["baseline"].trained  # the same training is the same version
    table = registry.registry_table(engine)
    assert list(table["version"]) == [state.models["baseline"].version] and list(table["origin"]) == [Origin.RETRAIN]


def test_point_in_time_deleting_later_bars_changes_no_earlier_decision_or_return(tmp_path):
    """Replay A over three steps on the full data; replay B over the first two on a copy without any bar
    from t_3 on: every decision of steps 1-2 and every return B has are A's, bit for bit."""
    settings_of = {}
    for name in ("full", "cut"):
        url = f"sqlite:///{tmp_path / name}.db"
        from brain_tasks.brain.migrate import upgrade

        upgrade(url)
        engine = make_engine(url)
        store_market(engine, [SYMBOL])
        settings_of[name] = (engine, from_environ({"BRAIN_DATABASE_URL": url}))
    engine, settings = settings_of["full"]
    plan_a, _, _ = run_replay(engine, settings, [SYMBOL], ["baseline"], "2024-01-08", "2024-01-10",
                              grid=["dsr_level=0.5"])
    cut_at = plan_a.steps[2].decided
    cut_engine, cut_settings = settings_of["cut"]
    with cut_engine.begin() as conn:
        import sqlalchemy as sa

        conn.execute(sa.delete(store.get_table("candles")).where(store.get_table("candles").c.ts >= cut_at))
    plan_b, _, _ = run_replay(cut_engine, cut_settings, [SYMBOL], ["baseline"], "2024-01-08", "2024-01-09",
                              grid=["dsr_level=0.5"])
    assert [s.decided for s in plan_b.steps] == [s.decided for s in plan_a.steps[:2]]
    keep = ("symbol", "step", "policy", "as_of", "choices", "action", "reason")
    a = [{k: d[k] for k in keep} for d in replays.decisions(engine, plan_a.replay_id) if d["step"] <= 2]
    b = [{k: d[k] for k in keep} for d in replays.decisions(cut_engine, plan_b.replay_id)]
    assert a == b and len(b) == 2 * 6
    ra, rb = replays.returns(engine, plan_a.replay_id, SYMBOL), replays.returns(cut_engine, plan_b.replay_id, SYMBOL)
    assert set(ra) == set(rb)
    for policy, series in rb.items():
        series = series.dropna()
        assert len(series) > 400 and series.index.max() < cut_at
        np.testing.assert_array_equal(ra[policy].reindex(series.index).to_numpy(), series.to_numpy(), err_msg=policy)


def test_bad_input_is_refused_before_anything_is_written(market):
    engine, settings = market
    before = snapshots.snapshot(engine)

    def refused(*args, **kwargs) -> str:
        with pytest.raises(RequestError) as info:
            plan_replay(engine, settings, *args, **kwargs)
        return str(info.value)

    assert "after --to" in refused([SYMBOL], ["baseline"], "2024-01-09", "2024-01-08")
    assert "shorter than a bar" in refused([SYMBOL], ["baseline"], *WINDOW, every="1m")
    assert "whole days" in refused([SYMBOL], ["baseline"], *WINDOW, every="6h")
    assert "unknown model" in refused([SYMBOL], ["nope"], *WINDOW)
    assert "unknown --grid setting" in refused([SYMBOL], ["baseline"], *WINDOW, grid=["alpha=0.1"])
    assert "between 0 and 1" in refused([SYMBOL], ["baseline"], *WINDOW, grid=["dsr_level=1.5"])
    assert "after the newest stored bar" in refused([SYMBOL], ["baseline"], "2024-01-08", "2024-02-01")
    assert "before the stored data" in refused([SYMBOL], ["baseline"], "2023-12-01", "2024-01-05")
    assert "unknown symbol" in refused(["NONE/USD"], ["baseline"], *WINDOW)
    snapshots.assert_same_database(before, snapshots.snapshot(engine))


def test_a_symbol_with_too_little_history_is_skipped_with_its_reason(market):
    engine, settings = market
    store_market(engine, ["NEW/USD"], start="2024-01-07", end="2024-01-11")  # one day before t_1
    plan, result, _ = run_replay(engine, settings, [SYMBOL, "NEW/USD"], ["baseline"], *WINDOW)
    summary = replays.get_replay(engine, plan.replay_id)["summary"]
    assert result["state"] == Status.PARTIAL or result["state"] == Status.OK
    assert summary["symbols"]["NEW/USD"]["state"] == Status.SKIPPED
    assert "too little history" in summary["symbols"]["NEW/USD"]["reason"]
    assert summary["symbols"][SYMBOL]["state"] == Status.OK and summary["n_symbols_walked"] == 1
    assert {r["symbol"] for r in replays.results(engine, plan.replay_id)} == {SYMBOL, replays.POOLED}


def test_the_command_line_runs_a_replay_on_the_embedded_worker_and_refuses_bad_input(tmp_path):
    url = f"sqlite:///{tmp_path / 'brain.db'}"
    env = brain_env(url, None, tmp_path / ".brain")

    def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "brain_tasks.cli", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=timeout)

    assert cli("db", "upgrade").returncode == 0
    store_market(make_engine(url), [SYMBOL])
    bad = cli("replay", "--symbols", SYMBOL, "--models", "baseline", "--from", "2024-01-09", "--to", "2024-01-08")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("brain-tasks: --from")
    assert cli("replays").stdout.strip() == "no replays yet"
    out = cli("replay", "--symbols", SYMBOL, "--models", "baseline", "--from", "2024-01-09", "--to", "2024-01-10",
              "--json")
    assert out.returncode == 0, out.stderr
    import json

    shown = json.loads(out.stdout.strip().splitlines()[-1])
    assert shown["state"] == Status.OK and "brain" in shown["policies"] and shown["replay_id"].startswith("replay-")
    listed = cli("replays").stdout
    assert shown["replay_id"] in listed
    table = cli("replay", "show", shown["replay_id"]).stdout
    assert "newest:baseline" in table and "PBO" in table or "too few bars" in table
    assert cli("replay", "show", "replay-nope").returncode != 0


def test_the_redrive_canvas_of_a_replay_is_its_symbol_chain():
    from brain_tasks import workflows

    days = [dt.date(2024, 1, 7), dt.date(2024, 1, 8)]
    # Celery folds "group then task" into a chord: per model type a chain of its trainings in as-of
    # order is its header (the first gets no earlier outcomes, each next one the outcomes before it),
    # the walk then the outcome its body.
    sig = workflows.redrive_canvas("replay", SYMBOL, dt.date(2024, 1, 9), ["baseline", "lightgbm"], "replay-x", "a1",
                                   days=days)
    assert [[(t.task, t.args, t.immutable) for t in c.tasks] for c in sig.tasks] == [
        [("brain_tasks.replay_train", ([], SYMBOL, m, days[0].isoformat()), True),
         ("brain_tasks.replay_train", (SYMBOL, m, days[1].isoformat()), False)] for m in ("baseline", "lightgbm")]
    body = sig.body
    assert [t.task for t in body.tasks] == ["brain_tasks.replay_walk", "brain_tasks.record_outcome"]
    with pytest.raises(ValueError):
        workflows.redrive_canvas("replay", SYMBOL, dt.date(2024, 1, 9), ["baseline"], "replay-x", "a1")
    assert isinstance(RequestError("x"), BrainError)


def test_reconcile_redrives_a_lost_replay_symbol_and_sends_the_pool_when_its_chord_died(market):
    from brain_tasks.service.reconcile import reconcile
    from brain_tasks.service.steps import outcome

    engine, settings = market
    plan = plan_replay(engine, settings, [SYMBOL], ["baseline"], *WINDOW)
    replay_run.start(engine, settings, plan, "a1")
    sent: list = []
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=settings.stall_timeout + 60)
    done = reconcile(engine, settings, [], sent.append, now=later)
    assert done["redriven"] == [["a1", SYMBOL]] and len(sent) == 1
    # The symbol's replay chain, its steps known (one model type: Celery unrolls the group into the chain).
    assert [(t.task, t.args[-1]) for t in sent[0].tasks] == [("brain_tasks.replay_train", s.as_of.isoformat())
                                                             for s in plan.steps] + [
        ("brain_tasks.replay_walk", plan.replay_id), ("brain_tasks.record_outcome", SYMBOL)]
    # The chain finished but the chord's pooling step died with it: reconcile closes and sends the pool.
    outcome.record_outcome(engine, "a1", replay_walk_state(plan))
    sent.clear()
    done = reconcile(engine, settings, [], sent.append, now=later)
    assert done["closed"] == {"a1": Status.OK}
    assert [(s.task, s.args) for s in sent] == [("brain_tasks.replay_pool", (None, plan.replay_id))]


def replay_walk_state(plan):  # noqa: ANN001, ANN201
    from brain_tasks.service.chain import ChainState

    return ChainState.start(SYMBOL, plan.end)


def test_the_brain_policy_falls_back_as_serving_does(market):
    """Where a regime has no choice yet or the bar's regime is unknown, serving trades the champion unless
    its walk-forward result loses to flat (`ml.metrics.loses_to_flat`); the `brain` policy must trade the
    same.  Checked on every stored brain decision against the champion's metrics in the registry."""
    from brain_tasks.ml.metrics import loses_to_flat

    engine, settings = market
    plan, first, _ = run_replay(engine, settings, [SYMBOL], ["baseline"], *WINDOW)
    assert first["state"] == Status.OK
    seen = []
    for d in replays.decisions(engine, plan.replay_id, SYMBOL, "brain"):
        champion = d["details"].get("champion")  # "baseline v2"
        fallback = d["choices"][replays.OTHERWISE]
        if champion is None:
            assert fallback["model_type"] == "flat", d
            continue
        model_type, version = champion.split(" v")
        loses = loses_to_flat(registry.metrics_of(engine, SYMBOL, model_type, int(version))["all"])
        expected = {"model_type": "flat", "version": None} if loses else {"model_type": model_type,
                                                                          "version": int(version)}
        assert fallback == expected, (d, loses)
        seen.append(loses)
    assert seen, "no step had a champion"
