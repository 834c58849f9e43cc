"""The Brain schema: SQLAlchemy 2 typed models of every Brain table.

Every table's primary key *is* its natural key, so writing the same fact twice leaves one row and no
key column can be NULL (a NULL in a unique key would let duplicates through).  Prices, rates and
scores are double precision: the original Brain's NUMERIC(10, 4) columns overflowed or rounded away
funding rates on basis-point scales.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (JSON, Boolean, Date, DateTime, Double, Index, Integer, LargeBinary, MetaData, String, Text,
                        UniqueConstraint, text)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from brain_tasks.vocabulary import ChampionStatus, Origin

# Constraint names that Alembic can reproduce on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are stored as naive UTC
    and given their zone back on read.  Naive datetimes are refused: guessing their zone is how
    time series get shifted by hours.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if hasattr(value, "to_pydatetime"):
            value = value.to_pydatetime()
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: Brain timestamps must be timezone-aware UTC")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


JSONType = JSON().with_variant(JSONB(), "postgresql")
Float = Double()  # double precision everywhere: basis points and 1e12 notionals both fit


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime(), float: Double(), dict[str, Any]: JSONType,
                           list[Any]: JSONType}


def _key(length: int = 64) -> Any:
    return mapped_column(String(length), primary_key=True)


# --- market data ---------------------------------------------------------------------------------

class Candle(Base):
    __tablename__ = "candles"
    exchange: Mapped[str] = _key(32)
    symbol: Mapped[str] = _key()
    timeframe: Mapped[str] = _key(8)
    ts: Mapped[dt.datetime] = mapped_column(primary_key=True)
    open: Mapped[float]
    high: Mapped[float]
    low: Mapped[float]
    close: Mapped[float]
    volume: Mapped[float]


class FundingRate(Base):
    __tablename__ = "funding_rates"
    exchange: Mapped[str] = _key(32)
    symbol: Mapped[str] = _key()
    ts: Mapped[dt.datetime] = mapped_column(primary_key=True)
    rate: Mapped[float]
    mark_price: Mapped[float | None]


class OpenInterest(Base):
    __tablename__ = "open_interest"
    exchange: Mapped[str] = _key(32)
    symbol: Mapped[str] = _key()
    ts: Mapped[dt.datetime] = mapped_column(primary_key=True)
    open_interest: Mapped[float]
    open_interest_value: Mapped[float | None]


class Liquidation(Base):
    __tablename__ = "liquidations"
    exchange: Mapped[str] = _key(32)
    symbol: Mapped[str] = _key()
    ts: Mapped[dt.datetime] = mapped_column(primary_key=True)
    # The exchange's own id when it has one, else a digest of the event's fields (never NULL).
    liq_id: Mapped[str] = _key(128)
    side: Mapped[str] = mapped_column(String(8))  # 'long' = a long was liquidated (forced sell)
    price: Mapped[float]
    amount: Mapped[float]
    value: Mapped[float | None]


class SentimentScore(Base):
    __tablename__ = "sentiment_scores"
    source: Mapped[str] = _key(64)
    symbol: Mapped[str] = _key()
    ts: Mapped[dt.datetime] = mapped_column(primary_key=True)
    score: Mapped[float]
    magnitude: Mapped[float | None]
    n_items: Mapped[int | None] = mapped_column(Integer)


class DataQualityLog(Base):
    __tablename__ = "data_quality_logs"
    source: Mapped[str] = _key(32)       # exchange id or file source name
    symbol: Mapped[str] = _key()
    timeframe: Mapped[str] = _key(8)     # '' for data without bars (funding, liquidations)
    data_kind: Mapped[str] = _key(16)    # candles | funding | open_interest | liquidations | ...
    check: Mapped[str] = _key(32)        # gap | duplicate | nan | ...
    ts_start: Mapped[dt.datetime] = mapped_column(primary_key=True)
    ts_end: Mapped[dt.datetime | None]
    severity: Mapped[str] = mapped_column(String(16))  # info | warning | error
    details: Mapped[dict[str, Any]]
    first_seen: Mapped[dt.datetime]
    last_seen: Mapped[dt.datetime]
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)
    resolved_at: Mapped[dt.datetime | None]


# --- models --------------------------------------------------------------------------------------

class ModelArtifact(Base):
    """Model bytes in the library's own format, addressed by their sha256 (never pickle)."""

    __tablename__ = "model_artifacts"
    sha256: Mapped[str] = _key(64)
    artifact_format: Mapped[str] = mapped_column(String(32))  # lightgbm-text | xgboost-ubj | linear-json
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime]


class ModelManifest(Base):
    """Everything needed to reproduce one trained version."""

    __tablename__ = "model_manifests"
    # A training task's identity: the same (symbol, model type, as-of date, config) is trained once.
    __table_args__ = (UniqueConstraint("symbol", "model_type", "as_of", "config_hash",
                                       name="uq_model_manifests_identity"),)
    symbol: Mapped[str] = _key()
    model_type: Mapped[str] = _key(32)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    as_of: Mapped[dt.date] = mapped_column(Date)
    config_hash: Mapped[str] = mapped_column(String(64))
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    # The walk-forward out-of-sample predictions (Parquet, in model_artifacts): rollback checks and
    # the report's equity curves read them instead of re-running the folds.
    oos_sha256: Mapped[str] = mapped_column(String(64))
    hyperparameters: Mapped[dict[str, Any]]
    config: Mapped[dict[str, Any]]
    feature_names: Mapped[list[Any]]
    feature_hash: Mapped[str] = mapped_column(String(64))
    dataset_digest: Mapped[str] = mapped_column(String(64))
    data_start: Mapped[dt.datetime]
    data_end: Mapped[dt.datetime]
    n_rows: Mapped[int] = mapped_column(Integer)
    code_version: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime]
    # The out-of-distribution gate's description of the training inputs (JSON in model_artifacts,
    # `ml.distribution`); NULL for versions trained before the gate, which are served without it.
    distribution_sha256: Mapped[str | None] = mapped_column(String(64))


class ModelRegistry(Base):
    """One row per trained version; status says its role (the regimes it trades: regime_choices)."""

    __tablename__ = "model_registry"
    __table_args__ = (UniqueConstraint("symbol", "model_type", "as_of", "config_hash",
                                       name="uq_model_registry_identity"),
                      # Exactly one champion per symbol, whatever the code above it does.
                      Index("uq_model_registry_one_champion", "symbol", unique=True,
                            postgresql_where=text(f"status = '{ChampionStatus.CHAMPION}'"),
                            sqlite_where=text(f"status = '{ChampionStatus.CHAMPION}'")))
    symbol: Mapped[str] = _key()
    model_type: Mapped[str] = _key(32)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    as_of: Mapped[dt.date] = mapped_column(Date)
    config_hash: Mapped[str] = mapped_column(String(64))
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    # candidate -> champion | rejected (the champion stayed) | backfill (trained as of a date before the
    # champion's: recorded, never promoted); champion -> previous (superseded) | rolled_back (live
    # rollback restored the previous champion).  See brain/registry.py.
    status: Mapped[str] = mapped_column(String(16))
    composite_score: Mapped[float | None]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    # retrain | replay: a version trained only for a replay stays out of the registry views (`models`,
    # the dashboard) until a retrain reaches the same identity and adopts it (registry.adopt).
    origin: Mapped[str] = mapped_column(String(16), server_default=Origin.RETRAIN.value, default=Origin.RETRAIN)


class ModelMetric(Base):
    """Out-of-sample metrics, long format: one row per (version, evaluation, regime, metric)."""

    __tablename__ = "model_metrics"
    symbol: Mapped[str] = _key()
    model_type: Mapped[str] = _key(32)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    evaluation: Mapped[str] = _key(32)  # walk_forward | recent
    regime: Mapped[str] = _key(16)      # all | low | normal | high | extreme
    metric: Mapped[str] = _key(32)
    value: Mapped[float]
    as_of: Mapped[dt.date] = mapped_column(Date)


class ModelComparison(Base):
    __tablename__ = "model_comparisons"
    symbol: Mapped[str] = _key()
    as_of: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    config_hash: Mapped[str] = _key(64)
    model_type: Mapped[str] = _key(32)
    version: Mapped[int] = mapped_column(Integer)
    composite_score: Mapped[float]
    rank: Mapped[int] = mapped_column(Integer)
    is_best: Mapped[bool] = mapped_column(Boolean)
    metrics: Mapped[dict[str, Any]]


class FeatureImportance(Base):
    __tablename__ = "feature_importance"
    symbol: Mapped[str] = _key()
    model_type: Mapped[str] = _key(32)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    method: Mapped[str] = _key(32)      # shap | permutation | correlation | variance
    feature: Mapped[str] = _key(128)
    importance: Mapped[float]
    rank: Mapped[int] = mapped_column(Integer)
    as_of: Mapped[dt.date] = mapped_column(Date)


class RollbackLog(Base):
    __tablename__ = "rollback_logs"
    symbol: Mapped[str] = _key()
    as_of: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    config_hash: Mapped[str] = _key(64)
    # promote | keep | insufficient_evidence | backfill | unchanged (retrain decisions), rollback (nightly)
    action: Mapped[str] = mapped_column(String(24))
    model_type: Mapped[str] = mapped_column(String(32))
    from_version: Mapped[int | None] = mapped_column(Integer)
    to_version: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    stats: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime]


class TrainingRun(Base):
    """One row per (attempt, symbol) of a run; symbol '*' is the attempt's summary row.

    A run's id is deterministic (what it does: kind, as-of, symbols, models); every enqueue of it is
    a new attempt with its own id, so a re-run never reads the states of an earlier one.  The truth
    about an attempt lives here, not in the broker: each symbol carries the step it reached, when it
    last made progress and a deadline past which `reconcile_runs` may re-drive it.
    """

    __tablename__ = "training_runs"
    attempt_id: Mapped[str] = _key(96)
    symbol: Mapped[str] = _key()
    run_id: Mapped[str] = mapped_column(String(96), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # retrain | nightly
    as_of: Mapped[dt.date] = mapped_column(Date)
    # pending | running | succeeded | failed | skipped | cancelled; the summary row also: partial
    state: Mapped[str] = mapped_column(String(16), index=True)
    step: Mapped[str | None] = mapped_column(String(32))  # the last step that started
    models: Mapped[list[Any]]
    error: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]]
    redrives: Mapped[int] = mapped_column(Integer)  # times reconcile_runs re-sent this symbol's chain
    started_at: Mapped[dt.datetime | None]
    progress_at: Mapped[dt.datetime | None]
    deadline: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]


class FeatureDrift(Base):
    __tablename__ = "feature_drift"
    symbol: Mapped[str] = _key()
    as_of: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    feature: Mapped[str] = _key(128)
    psi: Mapped[float]
    psi_threshold: Mapped[float]
    ks_stat: Mapped[float]
    ks_pvalue: Mapped[float]
    drifted: Mapped[bool] = mapped_column(Boolean)
    reference_start: Mapped[dt.datetime]
    reference_end: Mapped[dt.datetime]
    current_start: Mapped[dt.datetime]
    current_end: Mapped[dt.datetime]
    n_reference: Mapped[int] = mapped_column(Integer)
    n_current: Mapped[int] = mapped_column(Integer)
    # Dependence-aware test (ml/drift.py): p-value adjusted over the features (Holm), the mean shift
    # in reference standard deviations, and the effective sample sizes the autocorrelation leaves.
    pvalue: Mapped[float | None]
    effect_size: Mapped[float | None]
    n_eff_reference: Mapped[float | None]
    n_eff_current: Mapped[float | None]


class ChampionHistory(Base):
    """Every change of a symbol's champion (promotion, live rollback, pin) with its reason and evidence:
    the alias history a registry needs to answer "what traded when, and why"."""

    __tablename__ = "champion_history"
    symbol: Mapped[str] = _key()
    # Deterministic per decision (e.g. "promote:2018-01-30:<config hash>"), so a repeated step adds no row.
    event_id: Mapped[str] = _key(128)
    action: Mapped[str] = mapped_column(String(24))  # promote | rollback | pin
    model_type: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    from_model_type: Mapped[str | None] = mapped_column(String(32))
    from_version: Mapped[int | None] = mapped_column(Integer)
    as_of: Mapped[dt.date] = mapped_column(Date)
    reason: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime]


class RegimeChoice(Base):
    """The model to trade in each volatility regime of a symbol, as of the latest selection; model_type
    'flat' (version NULL) when no candidate beat doing nothing with enough evidence."""

    __tablename__ = "regime_choices"
    symbol: Mapped[str] = _key()
    regime: Mapped[str] = _key(16)
    model_type: Mapped[str] = mapped_column(String(32))
    version: Mapped[int | None] = mapped_column(Integer)
    confidence: Mapped[float | None]
    tradeable: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)
    as_of: Mapped[dt.date] = mapped_column(Date)
    details: Mapped[dict[str, Any]]
    updated_at: Mapped[dt.datetime]


class SignalRecord(Base):
    """One decision served to the Engine for a closed bar: what the Brain said, when and why.

    Written once (insert, do nothing on conflict): a second computation of the same bar with the same
    model changes nothing, so the row keeps what the Engine was first told.  version 0 means "no
    model" (model_type 'flat': nothing was chosen for the regime, or the data was stale).
    """

    __tablename__ = "signals"
    symbol: Mapped[str] = _key()
    ts: Mapped[dt.datetime] = mapped_column(primary_key=True)  # the bar decided on (its open time)
    model_type: Mapped[str] = _key(32)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    regime: Mapped[str | None] = mapped_column(String(16))
    prediction: Mapped[float | None]
    position: Mapped[int] = mapped_column(Integer)  # -1 short, 0 flat, +1 long
    size: Mapped[float]
    confidence: Mapped[float | None]
    tradeable: Mapped[bool] = mapped_column(Boolean)
    stale: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    data_age_seconds: Mapped[float]
    served_at: Mapped[dt.datetime]
    # The gate and the expiry (NULL in rows served before them): whether the bar's inputs lay inside
    # the version's training distribution, their dissimilarity (> 1 = outside), and the version's age
    # (its last training bar to this bar).
    in_distribution: Mapped[bool | None] = mapped_column(Boolean)
    dissimilarity: Mapped[float | None]
    model_age_seconds: Mapped[float | None]
    # What the nightly audit needs to decide this bar again as it was decided: the registry state the
    # decision read (champion, regime choices, sizer) and a fingerprint of its input rows (a digest of
    # each series, the last candles verbatim).  NULL for rows served before the audit.
    context: Mapped[dict[str, Any] | None]


class SignalAudit(Base):
    """The nightly audit of one served signal: the decision computed again with the same version from
    the rows as stored at audit time.  Keyed as the signal; written once (an audited signal is not
    audited again).  `differences`: [{field, served, now}] over prediction, position, regime and chosen
    model; `corrections`: the input rows that changed since serving ([{kind, ts, field, served, now}])."""

    __tablename__ = "signal_audits"
    symbol: Mapped[str] = _key()
    ts: Mapped[dt.datetime] = mapped_column(primary_key=True)
    model_type: Mapped[str] = _key(32)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    served_at: Mapped[dt.datetime]
    audited_at: Mapped[dt.datetime] = mapped_column(index=True)
    same: Mapped[bool] = mapped_column(Boolean)
    differences: Mapped[list[Any]]
    corrections: Mapped[list[Any]]
    note: Mapped[str] = mapped_column(Text)


# --- replays (brain/replays.py is the one module that reads and writes them) -----------------------

class Replay(Base):
    """One replay of the Brain's decisions over history; its id is a digest of its inputs (symbols,
    models, window, step length, grid and training config hash), so the same request is the same row."""

    __tablename__ = "replays"
    replay_id: Mapped[str] = _key(96)
    symbols: Mapped[list[Any]]
    models: Mapped[list[Any]]
    start: Mapped[dt.date] = mapped_column(Date)      # the first step's traded day (--from)
    end: Mapped[dt.date] = mapped_column(Date)        # the last traded day (--to)
    every: Mapped[str] = mapped_column(String(16))    # step length ('1d')
    grid: Mapped[dict[str, Any]]                      # setting -> values of the brain[...] variants
    config_hash: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]]                    # steps, policies, settings used, costs, bars per year
    state: Mapped[str] = mapped_column(String(16))    # pending | running | succeeded | partial | failed
    summary: Mapped[dict[str, Any]]                   # pooled table, DSR, PBO; per symbol: its statistics or why skipped
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None]


class ReplayDecision(Base):
    """What one policy decided for one symbol at one step: per regime the model type and version it
    trades until the next step ('*' = the fallback), the action (brain: promote, keep, rollback, ...)
    and a one-line reason."""

    __tablename__ = "replay_decisions"
    replay_id: Mapped[str] = _key(96)
    symbol: Mapped[str] = _key()
    step: Mapped[int] = mapped_column(Integer, primary_key=True)   # 1..K
    policy: Mapped[str] = _key(96)
    as_of: Mapped[dt.date] = mapped_column(Date)       # the versions' as-of day (data up to its end)
    step_end: Mapped[dt.datetime]                      # t_k: the decision time; bars in (t_k, t_k+1] follow it
    choices: Mapped[dict[str, Any]]                    # regime -> {"model_type", "version"}
    action: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]]


class ReplayResult(Base):
    """One policy's statistics for one symbol (or '*', the pooled equal-weight portfolio), with its
    per-bar net returns and positions packed by `ml.replay.pack_returns` (float32, zlib)."""

    __tablename__ = "replay_results"
    replay_id: Mapped[str] = _key(96)
    symbol: Mapped[str] = _key()                       # '*' = pooled
    policy: Mapped[str] = _key(96)
    metrics: Mapped[dict[str, Any]]                    # policy_metrics plus p_value / sharpe_diff against brain
    n_bars: Mapped[int] = mapped_column(Integer)
    # Digest of what the symbol's walk read (its versions per step, its stored bars up to the window's
    # end): a re-run with the same digest finds its results instead of recomputing them.
    inputs: Mapped[str] = mapped_column(String(64))
    returns: Mapped[bytes] = mapped_column(LargeBinary)
    positions: Mapped[bytes] = mapped_column(LargeBinary)  # pooled: the share of symbols holding a position


TABLES = tuple(Base.metadata.sorted_tables)
TABLE_NAMES = tuple(sorted(t.name for t in TABLES))
