"""The `brain-tasks` command line."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import click

from brain_tasks.settings import Settings, get_settings


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _engine(settings: Settings) -> Any:
    from brain_tasks.brain.db import make_engine

    return make_engine(settings.database_url)


@click.group()
def main() -> None:
    """brain_tasks: per-symbol ML for crypto trading on Celery workers."""


@main.group()
def db() -> None:
    """The Brain schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the Brain schema at BRAIN_DATABASE_URL."""
    from brain_tasks.brain.migrate import current_revision, upgrade

    s = get_settings()
    upgrade(s.database_url)
    click.echo(f"{s.describe()['database']}: schema at revision {current_revision(s.database_url)}")


@main.command()
@click.option("--source", type=click.Choice(["freqtrade"]), default="freqtrade", show_default=True)
@click.option("--path", "path", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--symbols", default=None, help="comma-separated pairs, e.g. ETH/BTC,LTC/BTC (default: all)")
@click.option("--timeframe", default="5m", show_default=True)
def ingest(source: str, path: Path, symbols: str | None, timeframe: str) -> None:
    """Load candles / funding rates from files into the Brain (idempotent)."""
    from brain_tasks.brain.migrate import upgrade
    from brain_tasks.collect import ingest_freqtrade

    s = get_settings()
    upgrade(s.database_url)
    summary = ingest_freqtrade(_engine(s), path, symbols=_csv(symbols) or None, timeframe=timeframe,
                               exchange=s.exchange)
    click.echo(json.dumps(summary, indent=2, default=str))


class _Session:
    """What a command started: in embedded mode its worker process (checked while waiting) and its
    attempts (finished on the way out, so none is left pending and no message is replayed later)."""

    def __init__(self, proc: Any = None, log_path: Path | None = None) -> None:
        self.proc, self.log_path, self.attempts = proc, log_path, []

    def check(self, _status: Any = None) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise click.ClickException(f"the embedded worker died (exit code {self.proc.returncode}); "
                                       f"unfinished symbols are cancelled; see {self.log_path}")


@contextlib.contextmanager
def _workers(settings: Settings) -> Iterator[_Session]:
    """Embedded: a local worker process for the duration of the command; production: nothing."""
    if not settings.embedded:
        yield _Session()
        return
    from brain_tasks.embedded import CRASH_WARNING, embedded_worker, finish_attempts

    click.secho(CRASH_WARNING, fg="yellow", err=True)
    session = _Session()
    reason = "the command stopped before this symbol finished"
    try:
        with embedded_worker(settings) as proc:
            session.proc, session.log_path = proc, settings.home / "worker.log"
            yield session
    except click.ClickException as exc:
        reason = exc.message
        raise
    finally:
        if session.attempts:
            finish_attempts(settings, session.attempts, reason)


def _follow(client: Any, handle: Any, symbols: list[str], timeout: float, session: _Session) -> dict[str, Any]:
    """A progress bar of symbols done / failed until the attempt's summary is written."""
    shown = 0
    with click.progressbar(length=max(1, len(symbols)), label=f"run {handle.run_id}", show_pos=True,
                           item_show_func=lambda s: s) as bar:
        def progress(status: dict[str, Any]) -> None:
            nonlocal shown
            session.check()
            counts = status["counts"]
            done = counts.get("succeeded", 0) + counts.get("failed", 0)
            if done > shown:
                bar.update(done - shown, f"{counts.get('succeeded', 0)} done, {counts.get('failed', 0)} failed")
                shown = done

        try:
            return client.wait(handle, timeout=timeout, poll=0.5, on_poll=progress)
        except TimeoutError as exc:
            raise click.ClickException(str(exc)) from None


def _print_run(status: dict[str, Any]) -> None:
    click.echo(f"run {status['run_id']} attempt {status.get('attempt_id')}: {status['state']}  {status['counts']}")
    for symbol, info in sorted(status["symbols"].items()):
        if info["state"] != "succeeded":
            click.echo(f"  {symbol}: {info['state']}  {info.get('error') or ''}")


def _client(settings: Settings) -> Any:
    from brain_tasks.client import BrainClient

    return BrainClient(settings)


def run_retrain(client: Any, symbols: list[str], models: list[str] | None, as_of: str | None,
                wait: bool, timeout: float = 6 * 3600, session: _Session | None = None) -> dict[str, Any] | None:
    """Enqueue the retrain; with `wait`, follow it and print its outcome (workers must be running)."""
    session = session or _Session()
    handle = client.retrain(symbols, models=models, as_of=as_of)
    session.attempts.append(handle.attempt_id)
    click.echo(f"enqueued brain_tasks.daily_retrain: run {handle.run_id} attempt {handle.attempt_id}")
    if not wait:
        return None
    status = _follow(client, handle, symbols, timeout, session)
    _print_run(status)
    return status


@main.command()
@click.option("--symbols", required=True, help="comma-separated pairs")
@click.option("--models", default=None, help="comma-separated: lightgbm,xgboost,baseline (default: all)")
@click.option("--as-of", "as_of", default=None, help="YYYY-MM-DD (default: today, UTC)")
@click.option("--wait/--no-wait", default=False, help="follow the run (always, in embedded mode)")
def retrain(symbols: str, models: str | None, as_of: str | None, wait: bool) -> None:
    """Enqueue (or, embedded, run) the daily retrain fan-out."""
    s = get_settings()
    with _workers(s) as session:
        status = run_retrain(_client(s), _csv(symbols), _csv(models) or None, as_of, wait or s.embedded,
                             session=session)
    if status and status["state"] == "failed":
        raise SystemExit(1)


def run_nightly(client: Any, as_of: str | None, wait: bool, timeout: float = 3600,
                symbols: list[str] | None = None, session: _Session | None = None) -> dict | None:
    session = session or _Session()
    handle = client.nightly(as_of=as_of, symbols=symbols)
    session.attempts.append(handle.attempt_id)
    click.echo(f"enqueued brain_tasks.nightly_analysis: run {handle.run_id} attempt {handle.attempt_id}")
    if not wait:
        return None
    try:
        status = client.wait(handle, timeout=timeout, poll=0.5, on_poll=session.check)
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"nightly {status['run_id']}: {status['state']}")
    details = status.get("details") or {}
    for symbol, drifted in sorted((details.get("drifted") or {}).items()):
        click.echo(f"  {symbol}: {len(drifted)} drifted features {', '.join(drifted[:5])}")
    for symbol, error in sorted((details.get("failed") or {}).items()):
        click.echo(f"  {symbol}: failed: {error}")
    return status


@main.command()
@click.option("--as-of", "as_of", default=None)
@click.option("--wait/--no-wait", default=False)
def nightly(as_of: str | None, wait: bool) -> None:
    """Enqueue (or run) the nightly feature analysis."""
    s = get_settings()
    with _workers(s) as session:
        run_nightly(_client(s), as_of, wait or s.embedded, session=session)


def models_table(settings: Settings, symbol: str | None = None) -> str:
    """The registry as a readable table: versions, status, per-regime choice, key metrics."""
    import pandas as pd
    import sqlalchemy as sa

    from brain_tasks.brain.models import ModelMetric, ModelRegistry

    engine = _engine(settings)
    with engine.connect() as conn:
        stmt = sa.select(ModelRegistry).order_by(ModelRegistry.symbol, ModelRegistry.as_of, ModelRegistry.model_type)
        if symbol:
            stmt = stmt.where(ModelRegistry.symbol == symbol)
        reg = pd.DataFrame(conn.execute(stmt).mappings().all())
        metrics = pd.DataFrame(conn.execute(sa.select(ModelMetric).where(
            ModelMetric.regime == "all", ModelMetric.evaluation == "walk_forward",
            ModelMetric.metric.in_(["sharpe", "max_drawdown", "hit_ratio", "psr"]))).mappings().all())
    if reg.empty:
        return "no models in the registry yet"
    if not metrics.empty:
        wide = metrics.pivot_table(index=["symbol", "model_type", "version"], columns="metric", values="value")
        reg = reg.join(wide, on=["symbol", "model_type", "version"])
    reg["regimes"] = reg["selected_regimes"].map(
        lambda d: ", ".join(f"{k}({v.get('confidence', 0):.2f})" for k, v in sorted((d or {}).items())) or "-")
    cols = [c for c in ["symbol", "model_type", "version", "as_of", "status", "composite_score", "sharpe",
                        "max_drawdown", "hit_ratio", "psr", "regimes"] if c in reg]
    return reg[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}")


@main.command()
@click.option("--symbol", default=None)
def models(symbol: str | None) -> None:
    """Show the registry: versions, champion, per-regime choice, metrics."""
    click.echo(models_table(get_settings(), symbol))


@main.command()
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True)
def report(out: Path) -> None:
    """Write an HTML report with plots."""
    from brain_tasks.report import write_report

    path = write_report(_engine(get_settings()), out)
    click.echo(f"report written to {path}")


@main.command()
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("report"),
              show_default=True)
@click.option("--symbols", default=None, help="a subset of the sample's pairs (default: all ten)")
@click.option("--models", default=None, help="default: every model type")
def demo(out: Path, symbols: str | None, models: str | None) -> None:
    """Ingest the bundled real sample, retrain every symbol, run the nightly analysis, print a summary
    and write the report (embedded default)."""
    from brain_tasks.brain import store
    from brain_tasks.brain.migrate import upgrade
    from brain_tasks.collect import ingest_freqtrade
    from brain_tasks.report import write_report

    s = get_settings()
    click.echo(f"database {s.describe()['database']}; broker {s.describe()['broker']}")
    upgrade(s.database_url)
    engine = _engine(s)
    summary = ingest_freqtrade(engine, s.sample_dir, symbols=_csv(symbols) or None, timeframe=s.timeframe,
                               exchange=s.exchange)
    pairs = sorted(_csv(symbols) or summary.get("symbols") or [])
    click.echo(f"ingested {len(pairs)} pairs from {s.sample_dir}")
    # The sample's pairs end on different days (the spot pairs in January 2018, the perpetual in
    # November 2021): retrain and analyse each as of its own last day.
    by_day: dict[str, list[str]] = {}
    for pair in pairs:
        last = store.last_timestamp(engine, "candles", exchange=s.exchange, symbol=pair, timeframe=s.timeframe)
        if last is not None:
            by_day.setdefault(last.date().isoformat(), []).append(pair)
    client = _client(s)
    statuses = []
    with _workers(s) as session:
        for day, day_pairs in sorted(by_day.items()):
            click.echo(f"\nas of {day}: {len(day_pairs)} symbols")
            statuses.append(run_retrain(client, day_pairs, _csv(models) or None, day, wait=True, session=session))
            run_nightly(client, day, wait=True, symbols=day_pairs, session=session)
    click.echo("")
    click.echo(models_table(s))
    path = write_report(engine, out)
    click.echo(f"\nreport written to {path}")
    if any(st and st["state"] == "failed" for st in statuses):
        raise SystemExit(1)


@main.command("runs")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1),
              help="how many of the most recently started runs to show")
@click.option("--json", "as_json", is_flag=True, help="print the runs and their attempts as JSON")
def runs_command(limit: int, as_json: bool) -> None:
    """Recent runs, newest first, with their attempts (each enqueue of a run is a new attempt)."""
    recent = _client(get_settings()).runs(limit)
    if as_json:
        click.echo(json.dumps(recent, indent=2))
        return
    if not recent:
        click.echo("no runs yet")
        return
    for run in recent:
        click.echo(f"{run['run_id']}  {run.get('kind', '?')}  as of {run.get('as_of', '?')}")
        for a in run["attempts"]:
            counts = ", ".join(f"{n} {state}" for state, n in sorted(a["counts"].items())) or "no symbols"
            click.echo(f"  {a['attempt_id']}  {a['state']:<9}  started {a['started_at']}  {counts}")


@main.command()
@click.argument("run_id")
@click.option("--attempt", "attempt_id", default=None,
              help="an attempt id of the run (default: its latest attempt)")
@click.option("--json", "as_json", is_flag=True, help="print the status as JSON")
def status(run_id: str, attempt_id: str | None, as_json: bool) -> None:
    """One run's per-symbol states (of its latest attempt, or of --attempt)."""
    info = _client(get_settings()).run_status(run_id, attempt_id)
    if info["state"] == "unknown":
        raise click.ClickException(f"no run {run_id}" + (f" with attempt {attempt_id}" if attempt_id else ""))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"run {run_id} attempt {info['attempt_id']}: {info['state']}  (as of {info['as_of']}, "
               f"started {info['started_at']}, finished {info['finished_at'] or '-'})")
    for symbol, row in sorted(info["symbols"].items()):
        extra = f"  re-driven {row['redrives']}x" if row["redrives"] else ""
        line = f"  {symbol:<16} {row['state']:<9} step {row['step'] or '-':<18}{extra}  {row['error'] or ''}"
        click.echo(line.rstrip())


if __name__ == "__main__":
    main()
