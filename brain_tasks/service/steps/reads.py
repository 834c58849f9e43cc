"""The reads the chain's steps share: a symbol's market data and the training set a version saw."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pandas as pd
import sqlalchemy as sa

from brain_tasks.brain import registry, store
from brain_tasks.brain.tables import ModelManifest
from brain_tasks.errors import DataError
from brain_tasks.settings import Settings


def train_config(settings: Settings) -> Any:
    from brain_tasks.ml.pipeline import TrainConfig

    return TrainConfig(timeframe=settings.timeframe, seed=settings.seed)


def load_market(engine: sa.Engine, settings: Settings, symbol: str, end: dt.datetime | None = None,
                start: dt.datetime | None = None) -> dict[str, pd.DataFrame | None]:
    """Candles and whatever funding / open interest / liquidations / sentiment the Brain holds for `symbol`.

    On PostgreSQL each frame is read column-wise (`store` packs the rows server-side).  The few reads of
    one symbol's chain (one per model type, one in rollback) are not cached: checking that the stored
    rows are unchanged would itself cost about a quarter of a read, and a chain's tasks mostly run in
    different processes (bench/profile_symbol.py prints the figures).  One connection serves the reads.
    """
    ex = settings.exchange
    with engine.connect() as conn:
        candles = store.read_candles(conn, ex, symbol, settings.timeframe, start=start, end=end)
        if candles.empty:
            raise DataError(f"no {settings.timeframe} candles stored for {symbol!r} on {ex!r}"
                            + (f" before {end:%Y-%m-%d %H:%M}" if end else ""))
        extra: dict[str, pd.DataFrame | None] = {}
        for key, reader in (("funding", store.read_funding), ("open_interest", store.read_open_interest),
                            ("liquidations", store.read_liquidations)):
            frame = reader(conn, ex, symbol, start=start, end=end)
            extra[key] = frame if len(frame) else None
        # Hourly news sentiment of the symbol's base asset, when any feed covers it (ml.features adds its
        # features only then, so the feature hash says which case a version is).
        sentiment = store.read_sentiment(conn, symbol, start=start, end=end)
    extra["sentiment"] = sentiment if len(sentiment) else None
    return {"candles": candles, **extra}


def market_kwargs(market: dict[str, pd.DataFrame | None]) -> dict[str, pd.DataFrame | None]:
    """The market frames other than candles, as `build_dataset` / `make_features` take them."""
    return {k: v for k, v in market.items() if k != "candles"}


def load_version(engine: sa.Engine, manifest: ModelManifest) -> Any:
    """A version's model, loaded from its artifact (sha256 checked)."""
    from brain_tasks.ml.models import load_model

    fmt, data = registry.load_artifact(engine, manifest.artifact_sha256)
    return load_model(fmt, data)


def rebuild(engine: sa.Engine, settings: Settings, manifest: ModelManifest,
            load: Callable[..., dict[str, pd.DataFrame | None]] = load_market) -> tuple[dict[str, Any], tuple]:
    """The market window a version was trained on and its `build_dataset` result, refused unless the
    digest proves it is the very training set of the manifest.  `load` reads like `load_market` (a
    replay's walk passes its `HeldMarket`)."""
    from brain_tasks.ml.pipeline import TrainConfig, build_dataset, dataset_digest

    market = load(engine, settings, manifest.symbol, start=manifest.data_start,
                  end=manifest.data_end + dt.timedelta(microseconds=1))
    dataset = build_dataset(market["candles"], TrainConfig.from_dict(manifest.config), **market_kwargs(market))
    X, y, _bar = dataset
    if list(X.columns) != list(manifest.feature_names) or dataset_digest(X, y) != manifest.dataset_digest:
        raise DataError(f"{manifest.symbol} {manifest.model_type} v{manifest.version}: the stored data no longer "
                        "rebuilds the training set recorded in its manifest")
    return market, dataset


def dataset_for(engine: sa.Engine, settings: Settings, manifest: ModelManifest,
                load: Callable[..., dict[str, pd.DataFrame | None]] = load_market) -> tuple[pd.DataFrame, pd.Series]:
    """The feature matrix and label a version was trained on, rebuilt from the Brain (the digest
    proves it is the same data)."""
    _market, (X, y, _bar) = rebuild(engine, settings, manifest, load)
    return X, y


class Reads:
    """What a champion decision reads (`steps.promote`): straight from the Brain on every call.  A
    replay's walk, which asks the same questions many times, uses `replay_walk.WalkReads` (held market,
    cached models, OOS frames and training sets) with the very same results."""

    def __init__(self, engine: sa.Engine, settings: Settings) -> None:
        self.engine, self.settings = engine, settings

    def market(self, symbol: str, start: dt.datetime | None = None,
               end: dt.datetime | None = None) -> dict[str, pd.DataFrame | None]:
        return load_market(self.engine, self.settings, symbol, start=start, end=end)

    def model(self, manifest: ModelManifest) -> Any:
        return load_version(self.engine, manifest)

    def oos(self, manifest: ModelManifest) -> pd.DataFrame:
        return registry.oos_frame(self.engine, manifest.oos_sha256)

    def dataset(self, manifest: ModelManifest) -> tuple[pd.DataFrame, pd.Series]:
        return dataset_for(self.engine, self.settings, manifest)

    def window_dataset(self, symbol: str, config: Any, start: dt.datetime,
                       end: dt.datetime) -> tuple[pd.DataFrame, pd.Series, pd.Series] | None:
        """`build_dataset` with `config` on the market in [start, end); None when it has too few usable
        rows (a DataError of the build), while a market without candles raises as `load_market` does."""
        from brain_tasks.ml.pipeline import build_dataset

        market = self.market(symbol, start=start, end=end)
        try:
            return build_dataset(market["candles"], config, **market_kwargs(market))
        except DataError:
            return None


class HeldMarket:
    """A symbol's market frames read once (`load_market` up to `end`) and sliced in memory like the
    store's reads (`start <= ts < end`), so a walk that asks for many windows reads the Brain once.  A
    slice holds exactly the rows a read with the same bounds returns: no bar at or after a read's `end`
    reaches it.  Only windows ending at or before the held end can be served (`replay_walk.WalkReads`
    reads any other from the Brain)."""

    def __init__(self, engine: sa.Engine, settings: Settings, symbol: str, end: dt.datetime) -> None:
        self.symbol, self.end = symbol, pd.Timestamp(end)
        self.frames = load_market(engine, settings, symbol, end=end)
        self._ts = {k: pd.DatetimeIndex(pd.to_datetime(f["ts"], utc=True)) for k, f in self.frames.items()
                    if f is not None}
        self.first = self._ts["candles"][0]

    def read(self, settings: Settings, start: dt.datetime | None,
             end: dt.datetime) -> dict[str, pd.DataFrame | None]:
        lo = None if start is None else pd.Timestamp(start)
        hi = pd.Timestamp(end)
        if hi > self.end:
            raise ValueError(f"a read up to {hi} from bars held up to {self.end} would miss the bars between")
        out: dict[str, pd.DataFrame | None] = {}
        for key, frame in self.frames.items():
            if frame is None:
                out[key] = None
                continue
            ts = self._ts[key]
            keep = (ts < hi) if lo is None else (ts >= lo) & (ts < hi)
            part = frame[keep].reset_index(drop=True)
            out[key] = part if (key == "candles" or len(part)) else None
        if out["candles"] is None or out["candles"].empty:
            raise DataError(f"no {settings.timeframe} candles stored for {self.symbol!r} on {settings.exchange!r}"
                            + f" before {end:%Y-%m-%d %H:%M}")
        return out


def run_versions(engine: sa.Engine, state: Any) -> list[ModelManifest]:
    """The manifests of this run's versions (the compare step's `versions`), by model type."""
    return [registry.manifest(engine, state.symbol, m, int(v)) for m, v in sorted((state.versions or {}).items())]


def label(m: Any) -> str:
    return f"{m.model_type} v{m.version}"
