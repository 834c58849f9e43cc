"""The sizer is trained only where it can act (issue 26), on real sample pairs through the whole chain:

- a flat symbol (its selection trades nothing): the sizer step is skipped with the reason, trains
  nothing, and the process that ran the chain never imports torch; the attempt's row is succeeded and
  says why there is no sizer;
- a symbol whose selection trades its champion in some regime: the sizer trains once, and an unchanged
  re-run (the next day, same data) reuses it through the training protocol;
- a symbol that was tradeable and becomes flat: its newest sizer is a leftover, and `predict` does
  not size a decision with it.

On the sample, the selection's deflated-Sharpe gate at its default level keeps ETH/BTC and LTC/BTC
flat; at ``BRAIN_DSR_LEVEL=0.01`` LTC/BTC trades its baseline in the low-volatility regime.
"""

from __future__ import annotations

import datetime as dt
import json

from brain_tasks.brain import registry, store
from brain_tasks.brain.db import make_engine
from brain_tasks.service import serving
from brain_tasks.service.steps import sizer as sizer_step
from brain_tasks.service.steps.outcome import start_attempt
from brain_tasks.settings import from_environ
from brain_tasks.vocabulary import LOSES_TO_FLAT, Status
from tests.chains import run_chain
from tests.test_jobs import _load
from tests.workers import brain_env, run_python

DAY = dt.date(2018, 1, 30)
FAST = {"BRAIN_SIZER_TIMESTEPS": "2048"}
TRADES = {"BRAIN_DSR_LEVEL": "0.01"}  # LTC/BTC's baseline passes the gate in one regime at this level
# The sample ends on DAY: a re-run the next day on the same data is not stale with a 3-day allowance.
NEXT_DAY_OK = {"BRAIN_MAX_DATA_AGE": str(3 * 86400)}
STAMP = dt.datetime(2018, 1, 30, 4, 56, tzinfo=dt.timezone.utc)  # just after the sample's last close

FLAT_CHAIN = """
import datetime as dt, json, sys
import brain_tasks.tasks  # the worker's task module, with its pool-process initialiser
from brain_tasks.tasks import _load_ml_stack
from brain_tasks.brain.db import make_engine
from brain_tasks.service.steps.outcome import start_attempt
from brain_tasks.settings import get_settings
from tests.chains import run_chain

_load_ml_stack()  # what a pool process runs at start-up (worker_process_init)
settings = get_settings()
engine = make_engine(settings.database_url)
day = dt.date(2018, 1, 30)
start_attempt(engine, settings, "retrain", "r-flat", "a-flat", day, ["ETH/BTC"], ["baseline"])
state = run_chain(engine, settings, "ETH/BTC", ["baseline"], day, "a-flat", with_sizer=True)
print(json.dumps({"torch": "torch" in sys.modules, "sb3": "stable_baselines3" in sys.modules,
                  "ml_stack": "lightgbm" in sys.modules, "status": state.status, "sizer": state.sizer.to_json()}))
"""


def _row(engine, attempt_id: str, symbol: str) -> dict:  # noqa: ANN001
    rows = store.read_table(engine, "training_runs", where={"attempt_id": attempt_id, "symbol": symbol})
    assert len(rows) == 1
    row = rows.iloc[0].to_dict()
    details = row["details"]
    row["details"] = json.loads(details) if isinstance(details, str) else details
    return row


def test_a_flat_symbol_skips_the_sizer_without_importing_torch(brain_db_url, tmp_path):
    engine = make_engine(brain_db_url)
    _load(engine, "ETH/BTC")
    env = brain_env(brain_db_url, None, tmp_path, **FAST)
    out = json.loads(run_python(FLAT_CHAIN, env).splitlines()[-1])
    assert out["ml_stack"], "the subprocess did not load the ML stack as a pool process does"
    assert out["status"] == Status.OK and out["sizer"]["status"] == Status.SKIPPED
    assert out["sizer"]["reason"] == sizer_step.NOTHING_TRADEABLE
    assert not out["torch"] and not out["sb3"], "a chain that sizes nothing imported torch / stable-baselines3"
    assert registry.latest_version(engine, "ETH/BTC", "ppo_sizer") is None
    row = _row(engine, "a-flat", "ETH/BTC")
    assert row["state"] == Status.OK and row["error"] is None
    assert row["details"]["sizer"]["status"] == Status.SKIPPED
    assert row["details"]["sizer"]["reason"] == sizer_step.NOTHING_TRADEABLE
    assert row["details"]["tradeable"] == []


def test_a_tradeable_symbol_trains_its_sizer_once_and_an_unchanged_rerun_reuses_it(brain_db_url):
    engine = make_engine(brain_db_url)
    settings = from_environ({"BRAIN_DATABASE_URL": brain_db_url, **FAST, **TRADES, **NEXT_DAY_OK})
    _load(engine, "LTC/BTC")
    start_attempt(engine, settings, "retrain", "r1", "a1", DAY, ["LTC/BTC"], ["baseline"])
    first = run_chain(engine, settings, "LTC/BTC", ["baseline"], DAY, "a1", with_sizer=True)
    assert first.selection["low"] == "baseline" and "low" in first.tradeable, first.selection
    assert first.sizer.status == Status.OK and first.sizer.trained and first.sizer.version == 1, first.sizer
    assert first.sizer.source == "baseline v1"
    assert _row(engine, "a1", "LTC/BTC")["details"]["sizer"]["version"] == 1

    # The next day on the same data: the baseline is reused (inputs unchanged), so is the champion's OOS
    # frame, and with it the sizer: no second version, and the reason says which one stands.
    day2 = DAY + dt.timedelta(days=1)
    start_attempt(engine, settings, "retrain", "r2", "a2", day2, ["LTC/BTC"], ["baseline"])
    again = run_chain(engine, settings, "LTC/BTC", ["baseline"], day2, "a2", with_sizer=True)
    assert again.status == Status.OK and again.models["baseline"].trained is False
    assert again.sizer.status == Status.OK and not again.sizer.trained and again.sizer.version == 1, again.sizer
    assert "inputs unchanged" in again.sizer.reason and again.sizer.reused_as_of == DAY.isoformat()
    assert registry.latest_version(engine, "LTC/BTC", "ppo_sizer").version == 1
    assert _row(engine, "a2", "LTC/BTC")["state"] == Status.OK


def test_a_symbol_that_becomes_flat_is_not_sized_by_its_leftover_sizer(brain_db_url):
    engine = make_engine(brain_db_url)
    settings = from_environ({"BRAIN_DATABASE_URL": brain_db_url, **FAST, **TRADES})
    _load(engine, "LTC/BTC")
    first = run_chain(engine, settings, "LTC/BTC", ["baseline"], DAY, with_sizer=True)
    assert first.sizer.trained, first.sizer
    sizer = sizer_step.current_sizer(engine, "LTC/BTC")
    assert sizer.source == ("baseline", 1)

    def decide() -> serving.Signal:
        serving.server(engine).decisions.clear()
        return serving.predict(engine, settings, "LTC/BTC", stamp=STAMP, record=False)

    def trade_everywhere(tradeable: bool, regimes: tuple[str, ...]) -> None:
        registry.write_regime_choice(engine, "LTC/BTC", DAY, {r: {
            "model_type": "baseline" if tradeable else "flat", "version": 1 if tradeable else None,
            "confidence": 1.0, "tradeable": tradeable, "reason": "test"} for r in regimes})

    # While the selection trades the champion, a decision by it is sized: the check below is sensitive.
    trade_everywhere(True, ("low", "normal", "high", "extreme", "all"))
    assert f"sized by {sizer.active}" in decide().reason

    # The next selection trades nothing (as select_model writes it when no candidate passes the gate):
    # the sizer step skips, and the newest sizer, still of the champion, is a leftover.
    trade_everywhere(False, ("low", "normal", "high", "extreme", "all"))
    flat_state = first.update(as_of=DAY + dt.timedelta(days=1), tradeable=[],
                              selection={r: "flat" for r in ("low", "normal", "high", "extreme", "all")})
    later = sizer_step.train_sizer(engine, settings, flat_state).sizer
    assert later.status == Status.SKIPPED and later.reason == sizer_step.NOTHING_TRADEABLE, later
    assert registry.champion(engine, "LTC/BTC").version == 1
    assert sizer_step.current_sizer(engine, "LTC/BTC").source == ("baseline", 1)
    flat = decide()
    assert "sized by" not in flat.reason and flat.size == 0.0 and not flat.tradeable

    # The leftover must not size the champion's fallback either (a regime the selection did not cover):
    # only "all" is left, flat, so the decided regime has no choice and the champion decides.
    trade_everywhere(False, ("all",))
    fallback = decide()  # the sample's champion loses to flat: not even the fallback trades it
    assert fallback.model_type == "flat" and LOSES_TO_FLAT in fallback.reason and "sized by" not in fallback.reason
    # A champion whose walk-forward result does not lose to flat is the fallback, still unsized by the leftover.
    registry.write_metrics(engine, "LTC/BTC", "baseline", 1, "walk_forward", DAY,
                           {"all": {"sharpe": 1.0, "total_return": 0.01}})
    serving.server(engine).verdicts.clear()
    fallback = decide()
    assert fallback.reason.startswith("champion baseline v1") and fallback.tradeable, fallback.reason
    assert "sized by" not in fallback.reason

