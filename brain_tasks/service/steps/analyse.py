"""Analyse: the nightly look at one symbol (live metrics of its served signals, the champion's
out-of-time check with automatic rollback, drift of its features, its importance trend)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from brain_tasks.brain import registry, store
from brain_tasks.brain.tables import ModelManifest
from brain_tasks.errors import DataError
from brain_tasks.service.chain import ChainState
from brain_tasks.service.steps.reads import load_market, market_kwargs
from brain_tasks.service.steps.promote import live_check
from brain_tasks.settings import Settings
from brain_tasks.timekeeping import day_end
from brain_tasks.vocabulary import Status

# Calendar features are uniform over a week by construction: a recent window shorter than a week
# "drifts" in them whatever the market does, so they are not tested.
CALENDAR_FEATURES = ("tod_sin", "tod_cos", "dow_sin", "dow_cos")


def analyse_symbol(engine: sa.Engine, settings: Settings, symbol: str, as_of: dt.date) -> ChainState:
    """The nightly chain's one working step: the audit of served signals, then (skipped while the symbol
    has no champion) live metrics, the live check, drift and importance trends."""
    from brain_tasks.service.audit import audit_symbol

    # Every signal served since the last audit, decided again from the rows as stored now (whatever the
    # champion is now: the audit uses the versions each signal was decided with).
    state = ChainState.start(symbol, as_of).update(audit=audit_symbol(engine, settings, symbol))
    champion = registry.champion(engine, symbol)
    if champion is None:
        return state.update(status=Status.SKIPPED, reason="no champion model yet")
    from brain_tasks.service.steps.publish import track_live

    # What the served signals earned on the bars that followed them (evaluation 'live').
    served = track_live(engine, settings, as_of, [symbol]).get(symbol, {})
    live = live_check(engine, settings, symbol, as_of)
    champion = registry.champion(engine, symbol) or champion  # a rollback changed it
    drift = _drift(engine, settings, champion, as_of)
    movers: list[dict[str, Any]] = []
    history = registry.importance_history(engine, symbol, champion.model_type)
    if len(history):
        from brain_tasks.ml.importance import rank_changes

        trend = rank_changes(history)
        moved = trend[trend["rank_change"] != 0]
        movers = store.jsonable(moved.reindex(moved["rank_change"].abs().sort_values(ascending=False).index)
                                .head(5).to_dict("records"))
    return state.update(live=live, live_bars=served, importance_movers=movers, **drift)


def _drift(engine: sa.Engine, settings: Settings, champion: ModelManifest, as_of: dt.date) -> dict[str, Any]:
    """The champion's features over the last day (at least 168 bars) against the four times as many
    bars before it (`ml.drift.drift_windows`), tested with the autocorrelation taken into account."""
    from brain_tasks.ml.drift import drift_windows, feature_drift
    from brain_tasks.ml.features import make_features, usable_candles

    symbol = champion.symbol
    market = load_market(engine, settings, symbol, end=day_end(as_of))
    feats = make_features(usable_candles(market["candles"]), timeframe=settings.timeframe, **market_kwargs(market))
    names = [f for f in champion.feature_names if f in feats.columns and f not in CALENDAR_FEATURES]
    feats = feats[names].dropna(axis=1, how="all").dropna()
    if feats.empty:
        raise DataError(f"{symbol}: no complete feature rows to test for drift")
    ref_mask, cur_mask = drift_windows(pd.DatetimeIndex(feats.index), settings.timeframe)
    reference, current = feats[ref_mask], feats[cur_mask]
    if len(current) < 50 or len(reference) < 100:
        raise DataError(f"{symbol}: not enough bars for drift ({len(reference)} reference, {len(current)} recent)")
    drift = feature_drift(reference, current, seed=settings.seed)
    drift = drift[np.isfinite(drift["psi_threshold"].astype(float))]  # a constant feature has nothing to test
    rows = [dict(symbol=symbol, as_of=as_of, feature=r.feature, psi=float(r.psi),
                 psi_threshold=float(r.psi_threshold), ks_stat=float(r.ks_stat), ks_pvalue=float(r.ks_pvalue),
                 drifted=bool(r.drifted), reference_start=reference.index[0].to_pydatetime(),
                 reference_end=reference.index[-1].to_pydatetime(),
                 current_start=current.index[0].to_pydatetime(), current_end=current.index[-1].to_pydatetime(),
                 n_reference=len(reference), n_current=len(current), pvalue=registry.finite(r.pvalue),
                 effect_size=registry.finite(r.effect_size), n_eff_reference=registry.finite(r.n_eff_reference),
                 n_eff_current=registry.finite(r.n_eff_current)) for r in drift.itertuples()]
    registry.write_drift(engine, rows)
    drifted = sorted((r for r in rows if r["drifted"]), key=lambda r: -abs(r["effect_size"] or 0.0))
    return {"drifted": [r["feature"] for r in drifted], "n_features": len(rows),
            "drift_size": {r["feature"]: round(r["effect_size"] or 0.0, 3) for r in drifted}}
