"""A finished replay written the way the engine writes one, through `brain/replays.py`'s write functions,
for the dashboard's and the report's tests: two walked symbols and one skipped, four daily steps, the
contract's policies traded on seeded synthetic bars, statistics from `ml.replay.policy_table`.  The
`brain` policy promotes at step 1, switches per regime, and rolls back at step 3 with a reason written
like markup (it must arrive escaped)."""

from __future__ import annotations

import datetime as dt
import functools

import numpy as np
import pandas as pd
import sqlalchemy as sa

from brain_tasks.brain import replays
from brain_tasks.ml.metrics import bars_per_year
from brain_tasks.ml.replay import pack_returns, policy_table, pooled_trades
from brain_tasks.vocabulary import Action, Status

UTC = dt.timezone.utc
REPLAY_ID = "replay-2024-03-01-2024-03-04-0123456789ab"
SYMBOLS = ("BTC/USDT", "ETH/USDT")
SKIPPED = "SOL/USDT"
MODELS = ("lightgbm", "xgboost")
POLICIES = ("brain", "newest:lightgbm", "newest:xgboost", "best_composite", "buy_and_hold", "flat")
START, END = dt.date(2024, 3, 1), dt.date(2024, 3, 4)
EVIL_REASON = "<script>alert('replay')</script> rolled back"
SKIP_REASON = "too little history before t_1 to train on: 12 bars"
BARS_PER_DAY = 288


def step_ends() -> list[dt.datetime]:
    return [dt.datetime.combine(START + dt.timedelta(days=k), dt.time(), UTC) + dt.timedelta(days=1)
            for k in range(4)]


def _trades(seed: int) -> dict[str, pd.DataFrame]:
    """Per-policy trade frames (net_return, position, turnover) over the bars after t_1."""
    rng = np.random.default_rng(seed)
    first = step_ends()[0]
    idx = pd.date_range(first + dt.timedelta(minutes=5), periods=3 * BARS_PER_DAY, freq="5min", tz="UTC", name="ts")
    market = rng.normal(0.0, 0.002, len(idx))
    out = {}
    for i, policy in enumerate(POLICIES):
        if policy == "flat":
            pos = np.zeros(len(idx))
        elif policy == "buy_and_hold":
            pos = np.ones(len(idx))
        else:
            pos = np.sign(market + rng.normal(0.0, 0.004 + 0.001 * i, len(idx)))
        turnover = np.abs(np.diff(np.r_[0.0, pos]))
        out[policy] = pd.DataFrame({"net_return": pos * market - turnover * 5e-4, "position": pos,
                                    "turnover": turnover}, index=idx)
    return out


def _decisions(symbol: str) -> list[dict]:
    rows = []
    for k, end in enumerate(step_ends(), start=1):
        for policy in POLICIES:
            choices = {"*": {"model_type": policy.split(":")[-1] if policy != "best_composite" else "xgboost",
                             "version": k if policy.startswith(("newest", "best")) else None}}
            action, reason, details = Action.NONE, f"{policy} at step {k}", {}
            if policy == "brain":
                choices = {"low": {"model_type": "lightgbm", "version": 1},
                           "normal": {"model_type": "xgboost" if k >= 2 else "flat", "version": 2 if k >= 2 else None},
                           "high": {"model_type": "flat", "version": None},
                           "extreme": {"model_type": "flat", "version": None},
                           "*": {"model_type": "lightgbm", "version": 1}}
                details = {"champion": "lightgbm v1"}
                if k == 1:
                    action, reason = Action.PROMOTE, "no champion yet: first version"
                elif k == 3:
                    action, reason = Action.KEEP, EVIL_REASON
                    details["live"] = {"action": str(Action.ROLLBACK), "n": 400, "p_value": 0.01}
                else:
                    action, reason = Action.INSUFFICIENT_EVIDENCE, "too few bars to tell"
            rows.append(dict(replay_id=REPLAY_ID, symbol=symbol, step=k, policy=policy,
                             as_of=START + dt.timedelta(days=k - 1),
                             step_end=end, choices=choices, action=action, reason=reason, details=details))
    return rows


@functools.lru_cache(maxsize=1)
def _tables() -> tuple[dict, dict, dict, dict]:
    """Trades and statistics, computed once per test process (every dashboard test writes them)."""
    ppy = bars_per_year("5m")
    trades = {s: _trades(i) for i, s in enumerate(SYMBOLS)}
    tables = {s: policy_table(frames, ppy) for s, frames in trades.items()}
    pooled_frames = {p: pooled_trades({s: trades[s][p] for s in SYMBOLS}) for p in POLICIES}
    return trades, tables, pooled_frames, policy_table(pooled_frames, ppy)


def write_replay(engine: sa.Engine) -> str:
    """The replay's rows; returns its id."""
    replays.save_replay(engine, replay_id=REPLAY_ID, symbols=[*SYMBOLS, SKIPPED], models=list(MODELS), start=START,
                        end=END, every="1d", grid={}, config_hash="c" * 64, params={"steps": 4},
                        state=Status.RUNNING)
    trades, tables, pooled_frames, pooled = _tables()
    per_symbol: dict[str, dict] = {}
    for symbol, frames in trades.items():
        table = tables[symbol]
        replays.write_decisions(engine, _decisions(symbol))
        replays.write_results(engine, [
            dict(replay_id=REPLAY_ID, symbol=symbol, policy=p, metrics=table["policies"][p], n_bars=len(f),
                 inputs="d" * 64,
                 returns=pack_returns(f["net_return"]), positions=pack_returns(f["position"]))
            for p, f in frames.items()])
        per_symbol[symbol] = {"state": Status.OK, "n_bars": table["n_bars"], "dsr": table["dsr"],
                              "pbo": table["pbo"], "actions": {"promote": 1, "keep": 1, "insufficient_evidence": 2}}
    per_symbol[SKIPPED] = {"state": Status.SKIPPED, "reason": SKIP_REASON}
    replays.write_results(engine, [
        dict(replay_id=REPLAY_ID, symbol=replays.POOLED, policy=p, metrics=pooled["policies"][p], n_bars=len(f),
             inputs="d" * 64,
             returns=pack_returns(f["net_return"]), positions=pack_returns(f["exposure"]))
        for p, f in pooled_frames.items()])
    replays.set_state(engine, REPLAY_ID, Status.PARTIAL,
                      summary={"pooled": pooled, "symbols": per_symbol, "n_symbols_walked": len(SYMBOLS),
                               "n_blocks": pooled["pbo"]["n_blocks"],
                               "bars_per_block": pooled["pbo"]["bars_per_block"]},
                      finished=True)
    return REPLAY_ID
