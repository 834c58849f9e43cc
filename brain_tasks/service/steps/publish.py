"""The work behind `brain_tasks.publish_signals` and the live tracking of served models.

publish: after each bar close, every symbol of the universe gets its decision computed and recorded
(a symbol whose bar is late gets a flat *stale* signal for the bar that should have closed, never a
silent old one); one bad symbol never stops the others.

live: each served model's signals joined with the bars that followed them give its live returns,
truly out of time, stored as `model_metrics` rows with evaluation 'live' (what a live rollback
compares).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from brain_tasks.service import serving
from brain_tasks.brain import registry
from brain_tasks.brain import signals as signal_rows
from brain_tasks.errors import BrainError, NoModelError, StaleDataError
from brain_tasks.settings import Settings
from brain_tasks.timekeeping import now, timeframe_seconds
from brain_tasks.vocabulary import Status

log = logging.getLogger(__name__)

LIVE = "live"


def universe(engine: sa.Engine, settings: Settings, symbols: Sequence[str] | None = None) -> list[str]:
    """The symbols to serve: those given, else the configured universe, else every symbol with a model."""
    return list(symbols or settings.symbols or registry.symbols_with_models(engine))


def publish_signals(engine: sa.Engine, settings: Settings, symbols: Sequence[str] | None = None,
                    stamp: dt.datetime | None = None) -> dict[str, Any]:
    """Compute and record the latest decision of each symbol; idempotent per (symbol, bar, model)."""
    stamp = stamp or now()
    published: dict[str, dict[str, Any]] = {}
    stale: dict[str, str] = {}
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    new_rows = 0
    for symbol in universe(engine, settings, symbols):
        try:
            try:
                signal = serving.predict(engine, settings, symbol, stamp=stamp, record=False)
                is_stale = False
            except StaleDataError as exc:
                signal, is_stale = serving.stale_signal(settings, exc, stamp), True
            new_rows += signal_rows.write(engine, [serving.to_row(signal, stamp, is_stale)])
            if is_stale:
                stale[symbol] = signal.reason
            else:
                published[symbol] = {"ts": signal.ts.isoformat(), "model_type": signal.model_type,
                                     "version": signal.version, "position": signal.position}
        except NoModelError as exc:
            skipped[symbol] = str(exc)
        except BrainError as exc:
            failed[symbol] = str(exc)
        except Exception as exc:  # a bug in one symbol: log it, serve the others
            log.exception("publish_signals %s failed", symbol)
            failed[symbol] = f"{type(exc).__name__}: {exc}"
    state = Status.FAILED if failed and not (published or stale) else (Status.PARTIAL if failed else Status.OK)
    return {"status": state, "served_at": stamp.isoformat(), "new_rows": new_rows, "published": published,
            "stale": stale, "skipped": skipped, "failed": failed}


def track_live(engine: sa.Engine, settings: Settings, as_of: dt.date, symbols: Sequence[str] | None = None
               ) -> dict[str, Any]:
    """Live returns and metrics of every model that served signals (of `symbols`, default all), written
    to model_metrics with evaluation 'live' and the given as-of date.  Returns {symbol: {"model v": n_bars}}."""
    from brain_tasks.ml import inference as ml

    wanted = set(symbols) if symbols else None
    out: dict[str, dict[str, int]] = {}
    for symbol, model_type, version in signal_rows.served_versions(engine):
        if wanted is not None and symbol not in wanted:
            continue
        manifest = serving.server(engine).manifest(symbol, model_type, version)
        config = ml.serve_config(manifest.config)
        signals, candles = signal_rows.with_following_bars(
            engine, settings.exchange, config.timeframe, timeframe_seconds(config.timeframe), symbol, model_type,
            version, following=config.execution_lag + 1)
        returns = ml.live_returns(signals, candles, config)
        metrics = ml.live_metrics(returns, config)
        if metrics:
            registry.write_metrics(engine, symbol, model_type, version, LIVE, as_of, metrics)
        out.setdefault(symbol, {})[f"{model_type} v{version}"] = len(returns)
    return out
