"""Read models of the dashboard, its JSON API and its Prometheus metrics: every query they run, named.

Each function answers one question for every symbol at once (one grouped query, not one per symbol),
so the overview of 1,000 symbols costs a handful of queries.  Tables that other work adds later
(`signals`) are looked up by name and their absence is an answer (``None``), not an error; columns a
later schema adds (`training_runs.attempt_id`, `.step`, `feature_drift.effect_size`) are read when
the mapped model has them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from brain_tasks.brain import registry
from brain_tasks.brain.tables import (ChampionHistory, DataQualityLog, FeatureDrift, FeatureImportance,
                                      ModelComparison, ModelManifest, ModelMetric, ModelRegistry, RegimeChoice,
                                      RollbackLog, TrainingRun, UTCDateTime)
from brain_tasks.intake import RUN_SUMMARY_SYMBOL
from brain_tasks.vocabulary import OPEN, Origin, Status

HEADLINE_METRICS = ("sharpe", "total_return", "max_drawdown", "sortino", "psr")
# Comparison rows the statistics work writes beside the models (model_type of model_comparisons).
BUY_AND_HOLD = "buy_and_hold"
FLAT = "flat"
SIGNALS_TABLE = "signals"


def _rows(engine: sa.Engine, stmt: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(stmt))


def has_table(engine: sa.Engine, name: str) -> bool:
    return sa.inspect(engine).has_table(name)


def _reflect(engine: sa.Engine, name: str) -> sa.Table | None:
    if not has_table(engine, name):
        return None
    return sa.Table(name, sa.MetaData(), autoload_with=engine)


# --- the universe --------------------------------------------------------------------------------

def _skip_scan(table: str, equal: str | None = None) -> str:
    """A recursive CTE `s(symbol)` of the distinct symbols of `table` (whose primary key leads with
    `equal`, if given, then `symbol`): one index probe per symbol, where a DISTINCT or GROUP BY would
    read every row (hundreds of millions of candles; a row per feature and day of drift).  Names are
    ours, never user input; the value of `equal` is the bound parameter of the same name."""
    first = f"WHERE {equal} = :{equal}" if equal else ""
    more = f"AND t.{equal} = :{equal}" if equal else ""
    return f"""s(symbol) AS (
            SELECT min(symbol) FROM {table} {first}
            UNION ALL
            SELECT (SELECT min(t.symbol) FROM {table} t WHERE t.symbol > s.symbol {more})
            FROM s WHERE s.symbol IS NOT NULL)"""


def last_bars(engine: sa.Engine, exchange: str, timeframe: str) -> dict[str, dt.datetime | None]:
    """symbol -> its newest `timeframe` candle of `exchange` (None: candles of other timeframes only).
    A skip scan finds the symbols and a correlated max each one's last bar: two index probes a symbol."""
    stmt = sa.text(f"""
        WITH RECURSIVE {_skip_scan("candles", "exchange")}
        SELECT s.symbol, (SELECT max(c.ts) FROM candles c WHERE c.exchange = :exchange AND c.symbol = s.symbol
                          AND c.timeframe = :timeframe) AS ts
        FROM s WHERE s.symbol IS NOT NULL""").columns(symbol=sa.String(), ts=UTCDateTime())
    with engine.connect() as conn:
        return {r.symbol: r.ts for r in conn.execute(stmt, {"exchange": exchange, "timeframe": timeframe})}


def _distinct_symbols(engine: sa.Engine, table: str) -> list[str]:
    stmt = sa.text(f"WITH RECURSIVE {_skip_scan(table)} SELECT symbol FROM s WHERE symbol IS NOT NULL")
    with engine.connect() as conn:
        return list(conn.execute(stmt).scalars())


def all_symbols(engine: sa.Engine, *known: Iterable[str]) -> list[str]:
    """Every symbol with a retrain's versions, drift or findings, and those of `known` (e.g. the keys of
    `last_bars` and `last_run_states`, which the caller has read already), sorted."""
    found = set().union(*known) if known else set()
    found.update(symbols_with_versions(engine))
    found.update(_distinct_symbols(engine, "feature_drift"))
    found.update(_rows_scalars(engine, sa.select(DataQualityLog.symbol).distinct()))
    if not known:
        found.update(last_run_states(engine))
    found.discard(RUN_SUMMARY_SYMBOL)
    return sorted(found)


def symbols_with_versions(engine: sa.Engine) -> list[str]:
    """Symbols with a retrain's version: a replay's own trainings (origin 'replay') stay the replay's, as
    in the registry views (`versions`, `registry.symbols_with_models`).  A skip scan over the symbols and
    one probe each for a retrain row."""
    stmt = sa.text(f"""WITH RECURSIVE {_skip_scan("model_registry")}
        SELECT s.symbol FROM s WHERE s.symbol IS NOT NULL AND EXISTS (
            SELECT 1 FROM model_registry r WHERE r.symbol = s.symbol AND r.origin = :origin)""")
    with engine.connect() as conn:
        return list(conn.execute(stmt, {"origin": str(Origin.RETRAIN)}).scalars())


def _rows_scalars(engine: sa.Engine, stmt: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(stmt).scalars())


# --- per-symbol facts, for every symbol at once ----------------------------------------------------

def champion_rows(engine: sa.Engine) -> dict[str, Any]:
    """symbol -> its champion's registry row (model_type, version, as_of, updated_at = when it became
    champion, oos_sha256 of its out-of-sample predictions, data_end = its last training bar)."""
    r, m = ModelRegistry, ModelManifest
    return {row.symbol: row for row in _rows(engine, sa.select(
        r.symbol, r.model_type, r.version, r.as_of, r.updated_at, r.composite_score, m.oos_sha256, m.data_end)
        .join(m, sa.and_(m.symbol == r.symbol, m.model_type == r.model_type, m.version == r.version))
        .where(registry.is_champion()))}


def champion_metrics(engine: sa.Engine, evaluation: str = "walk_forward",
                     metrics: Sequence[str] = HEADLINE_METRICS) -> dict[str, dict[str, float]]:
    """symbol -> {metric: value} of its champion over all regimes, for `evaluation` ('walk_forward' is
    out of sample by construction; 'live' when the nightly check wrote it); pivoted in the database,
    one row a symbol."""
    m, r = ModelMetric, ModelRegistry
    columns = [sa.func.max(sa.case((m.metric == name, m.value))).label(name) for name in metrics]
    stmt = (sa.select(m.symbol, *columns).join(r, sa.and_(
        r.symbol == m.symbol, r.model_type == m.model_type, r.version == m.version))
        .where(registry.is_champion(), m.evaluation == evaluation, m.regime == "all", m.metric.in_(list(metrics)))
        .group_by(m.symbol))
    return {row.symbol: {k: getattr(row, k) for k in metrics if getattr(row, k) is not None}
            for row in _rows(engine, stmt)}


def benchmark_rows(engine: sa.Engine, model_type: str = BUY_AND_HOLD) -> dict[str, dict[str, Any]]:
    """symbol -> metrics of its latest stored `model_type` comparison row (buy-and-hold, flat)."""
    c = ModelComparison
    latest = (sa.select(c.symbol, sa.func.max(c.as_of).label("as_of")).where(c.model_type == model_type)
              .group_by(c.symbol).subquery())
    stmt = sa.select(c.symbol, c.as_of, c.metrics).join(latest, sa.and_(
        latest.c.symbol == c.symbol, latest.c.as_of == c.as_of)).where(c.model_type == model_type)
    return {row.symbol: dict(row.metrics or {}, as_of=row.as_of) for row in _rows(engine, stmt)}


def regime_choice_counts(engine: sa.Engine) -> dict[str, tuple[int, int]]:
    """symbol -> (volatility regimes with a choice, those where a model trades rather than staying flat);
    the overall choice (regime 'all') is not a regime of its own."""
    rc = RegimeChoice
    trades = sa.func.sum(sa.case((sa.and_(rc.tradeable.is_(True), rc.model_type != FLAT), 1), else_=0))
    return {row.symbol: (int(row.n), int(row.trades or 0)) for row in _rows(
        engine, sa.select(rc.symbol, sa.func.count().label("n"), trades.label("trades")).where(rc.regime != "all")
        .group_by(rc.symbol))}


def regime_choices(engine: sa.Engine, symbol: str) -> list[Any]:
    """The symbol's per-regime choice rows."""
    rc = RegimeChoice
    return _rows(engine, sa.select(rc.symbol, rc.regime, rc.model_type, rc.version, rc.confidence, rc.tradeable,
                                   rc.reason, rc.as_of).where(rc.symbol == symbol).order_by(rc.regime))


def latest_signals(engine: sa.Engine) -> dict[str, Any] | None:
    """symbol -> its newest served signal; None while the `signals` table does not exist."""
    table = _reflect(engine, SIGNALS_TABLE)
    if table is None:
        return None
    latest = sa.select(table.c.symbol, sa.func.max(table.c.ts).label("ts")).group_by(table.c.symbol).subquery()
    stmt = sa.select(table).join(latest, sa.and_(latest.c.symbol == table.c.symbol, latest.c.ts == table.c.ts))
    return {row.symbol: row for row in _rows(engine, stmt)}


def signals_of(engine: sa.Engine, symbol: str, limit: int = 100) -> list[Any] | None:
    """The symbol's newest served signals; None while the `signals` table does not exist."""
    table = _reflect(engine, SIGNALS_TABLE)
    if table is None:
        return None
    return _rows(engine, sa.select(table).where(table.c.symbol == symbol).order_by(table.c.ts.desc()).limit(limit))


def drift_counts(engine: sa.Engine) -> dict[str, tuple[int, int, dt.date]]:
    """symbol -> (drifted features, features analysed, as_of) of its latest drift analysis: per symbol,
    the newest day by an index probe and its rows by an index range (never the whole history).  Grouped
    by symbol alone: grouping by the correlated day made PostgreSQL evaluate it again for every row."""
    stmt = sa.text(f"""
        WITH RECURSIVE {_skip_scan("feature_drift")},
        latest AS (SELECT s.symbol, (SELECT max(f.as_of) FROM feature_drift f WHERE f.symbol = s.symbol) AS as_of
                   FROM s WHERE s.symbol IS NOT NULL)
        SELECT f.symbol, max(f.as_of) AS as_of, count(*) AS n, sum(CASE WHEN f.drifted THEN 1 ELSE 0 END) AS drifted
        FROM latest l JOIN feature_drift f ON f.symbol = l.symbol AND f.as_of = l.as_of
        GROUP BY f.symbol""").columns(symbol=sa.String(), as_of=sa.Date(), n=sa.Integer(),
                                                 drifted=sa.Integer())
    return {row.symbol: (int(row.drifted or 0), int(row.n), row.as_of) for row in _rows(engine, stmt)}


def open_findings(engine: sa.Engine) -> dict[str, dict[str, int]]:
    """symbol -> {severity: count} of unresolved data-quality findings."""
    d = DataQualityLog
    out: dict[str, dict[str, int]] = {}
    for row in _rows(engine, sa.select(d.symbol, d.severity, sa.func.count().label("n"))
                     .where(d.resolved.is_(False)).group_by(d.symbol, d.severity)):
        out.setdefault(row.symbol, {})[row.severity] = int(row.n)
    return out


def _run_order() -> list[Any]:
    t = TrainingRun
    return [sa.func.coalesce(t.started_at, t.finished_at).desc().nulls_last(), t.as_of.desc(), t.run_id.desc()]


def last_run_states(engine: sa.Engine) -> dict[str, Any]:
    """symbol -> (run_id, state, error) of the newest run that included it.  A replay's attempt (kind
    'replay') is no run of the symbol's own chain: it is the replay's, shown on its pages."""
    t = TrainingRun
    cols = (t.symbol, t.run_id, t.state, t.error)
    own = sa.and_(t.symbol != RUN_SUMMARY_SYMBOL, t.kind != Origin.REPLAY)
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import distinct_on

        stmt = (sa.select(*cols).ext(distinct_on(t.symbol)).where(own)
                .order_by(t.symbol, *_run_order()))
        return {row.symbol: row for row in _rows(engine, stmt)}
    ranked = (sa.select(*cols, sa.func.row_number().over(partition_by=t.symbol, order_by=_run_order()).label("n"))
              .where(own).subquery())
    return {row.symbol: row for row in _rows(engine, sa.select(ranked).where(ranked.c.n == 1))}


# --- one symbol ----------------------------------------------------------------------------------

def versions(engine: sa.Engine, symbol: str) -> list[Any]:
    """Every version of the symbol (registry row joined with its manifest's dates), oldest first."""
    r, m = ModelRegistry, ModelManifest
    return _rows(engine, sa.select(r.model_type, r.version, r.as_of, r.status, r.composite_score, r.created_at,
                                   r.updated_at, m.oos_sha256, m.data_start, m.data_end, m.n_rows, m.config)
                 .join(m, sa.and_(m.symbol == r.symbol, m.model_type == r.model_type, m.version == r.version))
                 .where(r.symbol == symbol, r.origin == Origin.RETRAIN)
                 .order_by(r.as_of, r.created_at, r.model_type, r.version))


def version_metrics(engine: sa.Engine, symbol: str) -> dict[tuple[str, int], dict[str, dict[str, float]]]:
    """(model_type, version) -> {evaluation: {metric: value}} over all regimes."""
    m = ModelMetric
    out: dict[tuple[str, int], dict[str, dict[str, float]]] = {}
    for row in _rows(engine, sa.select(m.model_type, m.version, m.evaluation, m.metric, m.value)
                     .where(m.symbol == symbol, m.regime == "all")):
        out.setdefault((row.model_type, row.version), {}).setdefault(row.evaluation, {})[row.metric] = row.value
    return out


def version_events(engine: sa.Engine, symbol: str) -> list[dict[str, Any]]:
    """Every decision about the symbol's champion, oldest first: the champion history (promotions,
    rollbacks, pins) and the retrain decisions that changed nothing (keep, insufficient evidence, ...)."""
    h, lg = ChampionHistory, RollbackLog
    events = [dict(source="champion_history", at=row.created_at, as_of=row.as_of, action=row.action,
                   model_type=row.model_type, version=row.version, from_model_type=row.from_model_type,
                   from_version=row.from_version, reason=row.reason)
              for row in _rows(engine, sa.select(h).where(h.symbol == symbol))]
    changes = {(e["as_of"], e["action"]) for e in events}
    for row in _rows(engine, sa.select(lg).where(lg.symbol == symbol)):
        if (row.as_of, row.action) in changes:  # the same decision, already told by the history
            continue
        events.append(dict(source="rollback_logs", at=row.created_at, as_of=row.as_of, action=row.action,
                           model_type=row.model_type, version=row.to_version, from_model_type=row.model_type,
                           from_version=row.from_version, reason=row.reason))
    return sorted(events, key=lambda e: (e["at"], e["as_of"]))


def importance_by_version(engine: sa.Engine, symbol: str) -> list[Any]:
    """Every stored importance row of the symbol (model_type, version, method, feature, importance, rank)."""
    fi = FeatureImportance
    return _rows(engine, sa.select(fi.model_type, fi.version, fi.method, fi.feature, fi.importance, fi.rank)
                 .where(fi.symbol == symbol).order_by(fi.model_type, fi.version, fi.method, fi.rank))


def drift_history(engine: sa.Engine, symbol: str) -> list[Any]:
    """The symbol's latest drift analysis, one row per feature (effect_size when the schema has it)."""
    f = FeatureDrift
    as_of = sa.select(sa.func.max(f.as_of)).where(f.symbol == symbol).scalar_subquery()
    return _rows(engine, sa.select(f).where(f.symbol == symbol, f.as_of == as_of).order_by(f.psi.desc(), f.feature))


def latest_comparisons(engine: sa.Engine, symbol: str) -> list[Any]:
    c = ModelComparison
    as_of = sa.select(sa.func.max(c.as_of)).where(c.symbol == symbol).scalar_subquery()
    return _rows(engine, sa.select(c).where(c.symbol == symbol, c.as_of == as_of).order_by(c.rank, c.model_type))


def symbol_runs(engine: sa.Engine, symbol: str, limit: int = 20) -> list[Any]:
    t = TrainingRun
    return _rows(engine, sa.select(t).where(t.symbol == symbol).order_by(*_run_order()).limit(limit))


# --- runs ----------------------------------------------------------------------------------------

def _attempt_column() -> Any:
    """Runs by attempt once training_runs has attempt_id; before that, the run id is the attempt."""
    return getattr(TrainingRun, "attempt_id", TrainingRun.run_id)


def recent_runs(engine: sa.Engine, limit: int = 50) -> list[dict[str, Any]]:
    """The newest attempts (summary rows), each with its symbols' state counts, newest first."""
    t, attempt = TrainingRun, _attempt_column()
    heads = _rows(engine, sa.select(t, attempt.label("attempt")).where(t.symbol == RUN_SUMMARY_SYMBOL)
                  .order_by(*_run_order()).limit(limit))
    if not heads:
        return []
    counts: dict[str, dict[str, int]] = {}
    for row in _rows(engine, sa.select(attempt.label("attempt"), t.state, sa.func.count().label("n"))
                     .where(attempt.in_([h.attempt for h in heads]), t.symbol != RUN_SUMMARY_SYMBOL)
                     .group_by(attempt, t.state)):
        counts.setdefault(row.attempt, {})[row.state] = int(row.n)
    return [dict(_run_head(h), counts=counts.get(h.attempt, {})) for h in heads]


def _run_head(row: Any) -> dict[str, Any]:
    return dict(run_id=row.run_id, attempt_id=row.attempt, kind=getattr(row, "kind", None) or row.run_id.split("-")[0],
                as_of=row.as_of, state=row.state, error=row.error, details=row.details, started_at=row.started_at,
                finished_at=row.finished_at)


def run_attempts(engine: sa.Engine, run_id: str) -> list[dict[str, Any]]:
    """The run's attempts (newest first), each with its per-symbol rows."""
    t, attempt = TrainingRun, _attempt_column()
    rows = _rows(engine, sa.select(t, attempt.label("attempt")).where(t.run_id == run_id).order_by(t.symbol))
    heads = sorted((r for r in rows if r.symbol == RUN_SUMMARY_SYMBOL),
                   key=lambda r: r.started_at or r.finished_at or dt.datetime.min.replace(tzinfo=dt.timezone.utc),
                   reverse=True)
    out = []
    for head in heads:
        symbols = [dict(symbol=r.symbol, state=r.state, step=getattr(r, "step", None) or (r.details or {}).get("step"),
                        error=r.error, started_at=r.started_at, finished_at=r.finished_at,
                        progress_at=getattr(r, "progress_at", None), redrives=getattr(r, "redrives", None))
                   for r in rows if r.attempt == head.attempt and r.symbol != RUN_SUMMARY_SYMBOL]
        counts: dict[str, int] = {}
        for s in symbols:
            counts[s["state"]] = counts.get(s["state"], 0) + 1
        out.append(dict(_run_head(head), counts=counts, symbols=symbols))
    return out


def failed_symbol_runs(engine: sa.Engine, since: dt.datetime | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Failed (run, symbol) rows, newest first, with the step that failed when it is known."""
    t = TrainingRun
    stmt = sa.select(t).where(t.symbol != RUN_SUMMARY_SYMBOL, t.state == Status.FAILED)
    if since is not None:
        stmt = stmt.where(sa.func.coalesce(t.finished_at, t.started_at) >= since)
    return [dict(run_id=r.run_id, symbol=r.symbol, as_of=r.as_of, error=r.error,
                 step=getattr(r, "step", None) or (r.details or {}).get("step") or "unknown",
                 finished_at=r.finished_at or r.started_at)
            for r in _rows(engine, stmt.order_by(*_run_order()).limit(limit))]


def last_finished_runs(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    """kind -> the newest finished attempt's summary (state, duration, failed symbols)."""
    out: dict[str, dict[str, Any]] = {}
    for run in recent_runs(engine, limit=200):
        if run["finished_at"] is None or run["state"] in OPEN or run["kind"] in out:
            continue
        start = run["started_at"] or run["finished_at"]
        out[run["kind"]] = dict(run, duration=(run["finished_at"] - start).total_seconds(),
                                failed=run["counts"].get(Status.FAILED, 0))
    return out


# --- data quality --------------------------------------------------------------------------------

def findings(engine: sa.Engine, *, resolved: bool | None = None, symbol: str | None = None,
             limit: int = 200, offset: int = 0) -> tuple[int, list[Any]]:
    """(total, page) of data-quality findings, newest first."""
    d = DataQualityLog
    where = []
    if resolved is not None:
        where.append(d.resolved.is_(resolved))
    if symbol:
        where.append(d.symbol == symbol)
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(d).where(*where)).scalar() or 0
        page = list(conn.execute(sa.select(d).where(*where).order_by(d.last_seen.desc(), d.symbol, d.check)
                                 .limit(limit).offset(offset)))
    return int(total), page
