"""freqtrade's own backtester, run on the Brain's replay, reproduces the replay trade for trade.

On a seeded synthetic futures market (tests/integrations/market.py) the test:
1. writes the market as freqtrade data files (5m futures candles, 1h mark candles, 1h funding);
2. ingests them into the Brain (`brain-tasks ingest --source freqtrade`);
3. replays the last days (`brain-tasks replay --models baseline --wait --json`);
4. runs `freqtrade backtesting --strategy` a subclass of BrainStrategy, the pinned freqtrade in its own
   cached venv (tests/integrations/ftenv.py), with the fee equal to the Brain's cost.

Pass: every freqtrade trade opens and closes where the replay's `brain` position changes, execution
lag + 1 bars later (docs/freqtrade.md: a decision at bar t is filled at the open of bar t + lag + 1,
the close of t + lag), on the right side; and freqtrade's profit per pair is within 1% (relative) of the
replay's return for that pair, normalised as the docs say:
- stake: freqtrade trades a fixed stake; its per-trade profit ratios are compounded (one stake that
  reinvests every trade's result), as the replay compounds its per-bar returns;
- shorts: the replay's short is rebalanced every bar (position -1 times each bar's return), freqtrade's
  holds a fixed number of contracts from entry to exit.  The replay's own stored series give each
  trade's price relative (gross bar return = (net return + cost x turnover) / position), so each replay
  trade is re-expressed as a fixed-amount trade: long P_exit/P_entry, short 2 - P_exit/P_entry, times
  (1 - cost) for the entry and for the exit.  On longs this changes nothing.
The unnormalised figures are printed too.

The Brain is configured to trade on this short history (`BRAIN_DSR_LEVEL=0.5`,
`BRAIN_MIN_EVIDENCE_BARS=48`): with the defaults the selection gate stays flat for weeks (FIELD-NOTES).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brain_tasks.brain import replays
from brain_tasks.brain.db import make_engine
from tests.integrations import ftenv
from tests.integrations import market as mk
from tests.integrations.market import trade_runs

pytestmark = [pytest.mark.slow]

PAIRS = ["BTC/USDT:USDT", "ETH/USDT:USDT"]
DAYS = 14
STAKE = 1000.0
BRAIN_CLI = Path(sys.executable).with_name("brain-tasks")


def _brain(env: dict[str, str], *args: str, cwd: Path) -> str:
    done = subprocess.run([str(BRAIN_CLI), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"brain-tasks {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _last_json(text: str) -> dict:
    return json.loads(next(line for line in reversed(text.splitlines()) if line.startswith("{")))


def test_freqtrade_backtest_reproduces_the_brains_replay(tmp_path: Path) -> None:
    ft_python = ftenv.python()  # builds and caches freqtrade's venv on first use
    frames = {p: mk.candles(p, DAYS * 288, seed=7) for p in PAIRS}
    datadir = mk.write_futures_data(tmp_path / "data", frames)
    url = f"sqlite:///{tmp_path / 'brain.db'}"
    env = {**os.environ, "BRAIN_DATABASE_URL": url, "BRAIN_EXCHANGE": "freqtrade", "BRAIN_TIMEFRAME": "5m",
           "BRAIN_DSR_LEVEL": "0.5", "BRAIN_MIN_EVIDENCE_BARS": "48", "BRAIN_HOME": str(tmp_path / ".brain"),
           "BRAIN_SIZER_TIMESTEPS": "0", "PYTHONPATH": str(ftenv.REPO), "OMP_NUM_THREADS": "1"}
    env.pop("BRAIN_BROKER_URL", None)

    # 2. ingest, 3. replay the last four days
    _brain(env, "db", "upgrade", cwd=tmp_path)
    _brain(env, "ingest", "--source", "freqtrade", "--path", str(datadir), "--timeframe", "5m", cwd=tmp_path)
    last_day = frames[PAIRS[0]]["date"].iloc[-1].date()
    shown = _last_json(_brain(env, "replay", "--symbols", ",".join(PAIRS), "--models", "baseline",
                              "--from", str(last_day - pd.Timedelta(days=4)), "--to",
                              str(last_day - pd.Timedelta(days=1)), "--wait", "--json", cwd=tmp_path))
    replay_id = shown["replay_id"]
    engine = make_engine(url)
    from brain_tasks.service.steps.reads import train_config
    from brain_tasks.settings import from_environ

    config = train_config(from_environ(env))
    cost, lag = config.cost_bps / 1e4, config.execution_lag
    positions = {p: replays.positions(engine, replay_id, p, ["brain"])["brain"] for p in PAIRS}
    returns = {p: replays.returns(engine, replay_id, p, ["brain"])["brain"] for p in PAIRS}
    assert all((positions[p].fillna(0).diff().fillna(0) != 0).sum() >= 5 for p in PAIRS), "the Brain must trade"

    # 4. freqtrade's own backtest of a BrainStrategy subclass over the replay's bars (+ the lag's tail)
    first = min(s.index[0] for s in positions.values())
    last = max(s.index[-1] for s in positions.values()) + (lag + 4) * mk.BAR
    (tmp_path / "user_data").mkdir()
    (tmp_path / "markets.json").write_text(json.dumps(mk.markets(PAIRS)))
    mk.strategy_file(tmp_path / "strategies", "BrainReplayed")
    cfg = mk.backtest_config(tmp_path / "config.json", pairs=PAIRS, database_url=url, replay_id=None, fee=cost,
                             stake=STAKE)
    out = tmp_path / "trades.json"
    done = subprocess.run(
        [str(ft_python), str(Path(__file__).with_name("ft_backtest.py")), str(tmp_path / "markets.json"), str(out),
         "--", "--config", str(cfg), "--strategy", "BrainReplayed", "--strategy-path", str(tmp_path / "strategies"),
         "--datadir", str(datadir), "--userdir", str(tmp_path / "user_data"), "--fee", repr(cost),
         "--timerange", mk.timerange(first.floor("h"), last)],
        env={**ftenv.env(), "BRAIN_DATABASE_URL": url}, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"trades replay {replay_id}" in done.stderr  # found by its timerange: no replay id configured
    result = json.loads(out.read_text())
    trades = pd.DataFrame(result["trades"])

    for pair in PAIRS:
        runs = trade_runs(positions[pair], returns[pair], cost)
        mine = trades[trades["pair"] == pair].sort_values("open_date")
        expected = [((r.start + (lag + 1) * mk.BAR).isoformat(), (r.end + (lag + 1) * mk.BAR).isoformat(), r.side < 0)
                    for r in runs]
        got = [(pd.Timestamp(a).isoformat(), pd.Timestamp(b).isoformat(), bool(s))
               for a, b, s in zip(mine["open_date"], mine["close_date"], mine["is_short"])]
        assert got == expected, pair
        assert (mine["exit_reason"] == "exit_signal").all(), mine["exit_reason"].value_counts()

        ft_total = float(np.prod(1.0 + mine["profit_ratio"].to_numpy()) - 1.0)
        fixed_amount = float(np.prod([1.0 + r.fixed_amount_return for r in runs]) - 1.0)
        replay_total = float(np.prod(1.0 + returns[pair].fillna(0.0).to_numpy()) - 1.0)
        print(f"{pair}: {len(runs)} trades ({sum(r.side < 0 for r in runs)} short); freqtrade compounded "
              f"{ft_total:+.6f}, sum of ratios {mine['profit_ratio'].sum():+.6f}, profit_total_abs/stake "
              f"{result['per_pair'][pair]['profit_total_abs'] / STAKE:+.6f}; replay {replay_total:+.6f}, "
              f"as fixed-amount trades {fixed_amount:+.6f}")
        assert abs(ft_total - fixed_amount) <= 0.01 * abs(fixed_amount), pair
