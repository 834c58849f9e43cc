"""Serve-time decisions, computed by the training code itself: no second feature pipeline to drift.

A version's manifest stores its `TrainConfig`; serving rebuilds it (`serve_config`), builds features
with `make_features` and classifies the regime with `volatility_regimes` exactly as
`pipeline.train_and_evaluate` did, on the last `required_history(config)` candles up to the bar
(never before the version's training data started).  Every feature and the regime are window-exact
(a bar's value is a fixed computation over a bounded window of the bars up to it), so that bounded
window gives the training row bit for bit; every computation is causal, so later bars never change an
earlier bar's decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from brain_tasks.errors import DataError
from brain_tasks.market.quality import (
    DEFAULT_MAX_BAR_RATIO,
    JUMP_WINDOW,
    OVERFLOW_LIMIT,
)
from brain_tasks.ml import features, labels, regimes
from brain_tasks.ml.features import (
    CANDLE_FEATURES,
    SENTIMENT_FEATURES,
    make_features,
    sane_candles,
    usable_candles,
)
from brain_tasks.ml.metrics import (
    bars_per_year,
    positions,
    probabilistic_sharpe_ratio,
    strategy_metrics,
    strategy_returns,
)
from brain_tasks.ml.pipeline import TrainConfig
from brain_tasks.ml.regimes import REGIMES

# Models that predict each row from that row alone: one row in, one prediction out.  Any other model
# (the sequence models) is given every usable row up to the bar and its last prediction is taken.
ROW_MODELS = frozenset({"lightgbm", "xgboost", "baseline"})


# Feature rows a model may read before the decided one (a sequence model's window, the sizer's recent
# predictions): the serving window holds that many on top of a feature row's own history.
MODEL_CONTEXT_ROWS = 1024


def required_history(config: TrainConfig, model_rows: int = MODEL_CONTEXT_ROWS, *, sentiment: bool = False) -> int:
    """Usable candle rows, the bar included, from which serving decides a bar as training did: the
    regime's history and the features' for ``model_rows`` consecutive rows (``sentiment``: with the
    sentiment features' hours), whichever is longer."""
    return max(regimes.required_history(config.regime_window, config.regime_lookback),
               features.required_history(config.timeframe, sentiment=sentiment) + model_rows - 1)


def uses_sentiment(feature_names: Sequence[str]) -> bool:
    """Whether a version was trained with sentiment features (its feature names, hence its hash, say so)."""
    return not set(SENTIMENT_FEATURES).isdisjoint(feature_names)


# Bars before a candle that `usable_candles` reads to judge it (the median close it is compared with).
JUMP_MARGIN = JUMP_WINDOW


def _all_usable(candles: pd.DataFrame) -> bool:
    """A sufficient test that `usable_candles` keeps every candle (the common case, in microseconds):
    every value sane and all prices within a factor of ``sqrt(DEFAULT_MAX_BAR_RATIO)``, so no price
    can be that ratio away from any median of closes."""
    if len(candles) == 0:
        return False
    values = np.column_stack([candles[c].to_numpy(dtype="float64") for c in ("open", "high", "low", "close", "volume")])
    with np.errstate(invalid="ignore"):
        if not (np.isfinite(values).all() and (np.abs(values) < OVERFLOW_LIMIT).all()
                and (values[:, :4] > 0).all() and (values[:, 4] >= 0).all()):
            return False
    prices = values[:, :4]
    return bool(np.log(prices.max()) - np.log(prices.min()) < np.log(DEFAULT_MAX_BAR_RATIO) / 2)


def usable_window(candles: pd.DataFrame, from_start: bool) -> pd.DataFrame:
    """The candles training would use (`usable_candles`) among a window of stored ones.

    ``from_start``: the window holds every stored candle since the training data began, and is judged
    exactly as training judged it.  Otherwise the first `JUMP_MARGIN` sane candles of the window were
    compared with the window's first closes, not with the bars before them as in training: they are
    left out, and every candle after them is kept or dropped as training did.
    """
    if _all_usable(candles):
        return candles if from_start else candles.iloc[JUMP_MARGIN:].reset_index(drop=True)
    usable = usable_candles(candles)
    if from_start or not len(usable):
        return usable
    sane = np.flatnonzero(sane_candles(candles))
    if len(sane) <= JUMP_MARGIN:
        return usable.iloc[:0]
    first = candles["ts"].iloc[sane[JUMP_MARGIN]]
    return usable[usable["ts"] >= first].reset_index(drop=True)


def feature_rows(model: Any, sizer_rows: int = 0) -> int:
    """Feature rows `model` reads to predict the last bar and the `sizer_rows - 1` bars before it."""
    return int(getattr(model, "context_rows", 0)) + max(sizer_rows, 1)


def serve_config(config: Mapping[str, Any]) -> TrainConfig:
    """The training configuration stored in a manifest (unknown keys are an error: a stale manifest)."""
    return TrainConfig.from_dict(config)


def regime_at(candles: pd.DataFrame, config: TrainConfig) -> str | None:
    """The volatility regime of the last candle, as training labelled it (`volatility_regimes`); None
    during warm-up.  Only the last `regimes.required_history` candles are read: it depends on no others."""
    return regimes.last_regime(candles, window=config.regime_window, lookback=config.regime_lookback)


def feature_frame(market: Mapping[str, pd.DataFrame | None], config: TrainConfig,
                  rows: int | None = None) -> pd.DataFrame:
    """`make_features` of the market frames (usable candles plus any funding / open interest /
    liquidations / sentiment); with `rows`, of the last candles those many last feature rows depend on
    (the rows are the same)."""
    candles = market["candles"]
    sentiment = market.get("sentiment")
    if rows is not None:
        need = features.required_history(config.timeframe, sentiment=sentiment is not None) + rows - 1
        candles = candles.iloc[-need:]
    # A window may be a quiet market (one close price throughout): training saw it inside its history.
    return make_features(candles, timeframe=config.timeframe, funding=market.get("funding"),
                         open_interest=market.get("open_interest"), liquidations=market.get("liquidations"),
                         sentiment=sentiment, allow_constant=True)


def model_rows(X: pd.DataFrame, feature_names: list[str], model_type: str) -> pd.DataFrame:
    """The rows to feed a model for a decision at X's last bar, in the model's column order.

    Usable rows are those training could use (every candle feature known); the last bar must be one.
    """
    missing = [n for n in feature_names if n not in X.columns]
    if missing:
        raise DataError(f"features {missing[:5]} of this model cannot be built from the stored data")
    usable = ~np.isnan(X.to_numpy()[:, X.columns.get_indexer(list(CANDLE_FEATURES))]).any(axis=1)
    if not usable[-1]:
        raise DataError(f"bar {X.index[-1]} is still in the features' warm-up ({len(X)} bars of history)")
    if model_type in ROW_MODELS:
        return X.iloc[-1:][list(feature_names)]
    return X[usable][list(feature_names)]


def predict_last(model: Any, rows: pd.DataFrame) -> float:
    """The model's prediction for the last of `rows`."""
    out = np.asarray(model.predict(rows), dtype="float64").ravel()
    if len(out) != len(rows):
        raise ValueError(f"model returned {len(out)} predictions for {len(rows)} rows")
    return float(out[-1])


def position_of(prediction: float | None, config: TrainConfig, tradeable: bool) -> int:
    """The backtest's own position rule (sign beyond the threshold), flat when not tradeable."""
    if not tradeable or prediction is None or not np.isfinite(prediction):
        return 0
    return int(positions([prediction], config.threshold)[0])


def bar_returns(candles: pd.DataFrame, lag: int) -> pd.Series:
    """`labels.bar_returns` (its formula, the same bits) indexed by ts, without its training-data checks:
    a quiet window of a thin pair may well have one close price, which is nothing to learn from but
    still a return of 0."""
    return labels.close_to_close(labels.close_series(candles), lag)


def live_returns(signals: pd.DataFrame, candles: pd.DataFrame, config: TrainConfig) -> pd.DataFrame:
    """Per served bar: the next bar's return after the execution lag and the strategy's return.

    `signals` holds one model's decisions (ts, prediction, regime); bars whose following candles are
    not stored yet are left out.  Positions come from the predictions by the backtest's rule, so these
    are the model's live returns priced exactly as its walk-forward returns were.
    """
    cols = ["ts", "regime", "prediction", "bar_return", "strategy_return"]
    if signals.empty or candles.empty:
        return pd.DataFrame(columns=cols)
    bars = bar_returns(candles, config.execution_lag)
    s = signals.dropna(subset=["prediction"]).drop_duplicates("ts", keep="first").set_index("ts").sort_index()
    s = s.join(bars.rename("bar_return"), how="inner").dropna(subset=["bar_return"])
    if s.empty:
        return pd.DataFrame(columns=cols)
    strat = strategy_returns(s["prediction"].to_numpy(), s["bar_return"].to_numpy(), config.cost_bps,
                             config.threshold)
    out = s.assign(strategy_return=strat.to_numpy()).reset_index()
    return out[cols]


def live_metrics(returns: pd.DataFrame, config: TrainConfig) -> dict[str, dict[str, float]]:
    """{'all' and each regime present: strategy metrics plus psr, n_trades and exposure}."""
    ppy = bars_per_year(config.timeframe)

    def metrics(part: pd.DataFrame) -> dict[str, float]:
        r = part["strategy_return"].to_numpy(dtype="float64")
        pos = positions(part["prediction"].to_numpy(dtype="float64"), config.threshold)
        out = strategy_metrics(r, ppy)
        out["psr"] = probabilistic_sharpe_ratio(r)
        out["n_trades"] = float(np.count_nonzero(np.diff(pos, prepend=0.0)))
        out["exposure"] = float(np.mean(pos != 0)) if len(pos) else 0.0
        return out

    if returns.empty:
        return {}
    result = {"all": metrics(returns)}
    for regime, part in returns.groupby("regime", dropna=True):
        if regime in REGIMES:
            result[str(regime)] = metrics(part)
    return result
