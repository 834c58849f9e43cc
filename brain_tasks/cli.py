"""The `brain-tasks` command line.

A refused request (unknown model type, malformed or unknown symbol, bad date, missing schema,
unreachable database or broker) prints one line on stderr and exits with status 2; nothing is written.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Iterator

import click

from brain_tasks import __version__
from brain_tasks.errors import BrainError
from brain_tasks.settings import Settings, get_settings
from brain_tasks.vocabulary import Status

USAGE_ERROR = 2
# The demo shows a sequence model next to the trees on one pair only: lstm (the cheapest of the three)
# costs several times a pair's three other models together, and on every pair it made most of the
# demo's minutes (the README gives the demo's time).
DEMO_EXTRA_MODELS = ("lstm",)
DEMO_DEEP_PAIRS = ("ETH/BTC",)
# The demo's replay: inside the spot sample's days (2018-01-10 .. 2018-01-30), with two weeks of history
# before its first step; the two cheapest model types.
DEMO_REPLAY_WINDOW = ("2018-01-24", "2018-01-28")
DEMO_REPLAY_SYMBOLS = 3
DEMO_REPLAY_MODELS = ("baseline", "lightgbm")


class BrainGroup(click.Group):
    """Turns the Brain's own errors into one line and exit status 2 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        import sqlalchemy.exc

        try:
            return super().invoke(ctx)
        except BrainError as exc:
            click.echo(f"brain-tasks: {exc}", err=True)
            ctx.exit(USAGE_ERROR)
        except sqlalchemy.exc.OperationalError as exc:
            from brain_tasks.brain.db import redact_url

            first = str(exc.orig or exc).strip().splitlines()[0]
            click.echo(f"brain-tasks: database {redact_url(get_settings().database_url)}: {first}", err=True)
            ctx.exit(USAGE_ERROR)


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _engine(settings: Settings) -> Any:
    from brain_tasks.brain.db import make_engine

    return make_engine(settings.database_url)


@click.group(cls=BrainGroup)
@click.version_option(__version__, prog_name="brain-tasks")
def main() -> None:
    """brain_tasks: per-symbol ML for crypto trading on Celery workers."""


def _schema(settings: Settings) -> None:
    """Refuse to go on (exit 2) unless the Brain schema exists; creates nothing."""
    from brain_tasks.brain.db import check_schema

    _engine(settings)  # a URL that cannot be parsed (a port that is not a number) is named here, in one line
    check_schema(settings.database_url)


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
@click.option("--source", type=click.Choice(["freqtrade", "news"]), default="freqtrade", show_default=True,
              help="freqtrade: candle / funding files; news: items scored into sentiment_scores")
@click.option("--path", "path", type=click.Path(exists=True, path_type=Path), required=True,
              help="freqtrade: a data directory (feather / json / parquet); news: a CSV or JSON Lines file of items")
@click.option("--symbols", default=None, help="comma-separated pairs, e.g. ETH/BTC,LTC/BTC (default: all)")
@click.option("--timeframe", default="5m", show_default=True, help="the candle timeframe to load")
@click.option("--json", "as_json", is_flag=True, help="print the full summary as JSON instead of a table")
def ingest(source: str, path: Path, symbols: str | None, timeframe: str, as_json: bool) -> None:
    """Load candles / funding rates, or news items scored into sentiment_scores, from files
    (idempotent).  Exits 1 when a symbol failed or nothing was found."""
    from brain_tasks.brain.migrate import upgrade
    from brain_tasks.service.steps.collect import ingest_freqtrade
    from brain_tasks.market.sources import FreqtradeSource
    from brain_tasks.intake import check_symbols

    s = get_settings()
    wanted = check_symbols(_csv(symbols)) if symbols else None
    if source == "news":
        upgrade(s.database_url)
        ingest_news_file(s, path, wanted, as_json)
        return
    if not path.is_dir():
        raise click.BadParameter(f"{path} is not a directory", param_hint="--path")
    source = FreqtradeSource(path)
    available = set(source.symbols(timeframe)) | set(source.funding_symbols())
    if not available or (wanted and not set(wanted) & available):
        what = ", ".join(wanted) if wanted else "any pair"
        message = f"nothing to ingest: no {timeframe} candle or funding-rate files for {what} under {path}"
        if as_json:
            click.echo(json.dumps({"source": s.exchange, "path": str(path), "timeframe": timeframe, "symbols": [],
                                   "stored": 0, "error": message}, indent=2))
        click.echo(f"brain-tasks: {message}", err=True)
        raise SystemExit(1)
    upgrade(s.database_url)
    with click.progressbar(length=1, label=f"ingest {path}", show_pos=False, file=click.get_text_stream("stderr")) \
            as bar:
        summary = ingest_freqtrade(_engine(s), path, symbols=wanted, timeframe=timeframe, exchange=s.exchange)
        bar.update(1)
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        click.echo(_ingest_table(summary))
    if summary["failed"] or not (summary["candles"] or summary["funding"]):
        raise SystemExit(1)


def _ingest_table(summary: dict[str, Any]) -> str:
    """One row per input and pair with its true counts; what was skipped or failed says why."""
    lines = [f"{'kind':<8} {'symbol':<22} {'fetched':>9} {'stored':>9} {'rejected':>9}  range"]
    rows = []
    for kind in ("candles", "funding"):
        for symbol, info in summary.get(kind, {}).items():
            span = f"{info.get('first') or '-'} .. {info.get('last') or '-'}"
            note = f"\n{'':<32}{info['error']}" if info.get("error") else ""
            if info.get("not_ingested"):
                note += (f"\n{'':<32}{info['not_ingested']} rows dated before where this ingest resumed were not stored "
                         "(see data_quality_logs, check not_ingested)")
            rows.append((symbol, kind, f"{kind:<8} {symbol:<22} {info.get('fetched', 0):>9} {info.get('stored', 0):>9} "
                                       f"{info.get('rejected', 0):>9}  {span}{note}"))
    for what, word in (("skipped", "skipped"), ("failed", "failed")):
        for key, reason in summary.get(what, {}).items():
            kind, _, symbol = key.partition(":")
            rows.append((symbol, kind, f"{kind:<8} {symbol:<22} {word}: {reason}"))
    lines += [line for _, _, line in sorted(rows, key=lambda r: (r[0], r[1]))]
    pairs = sorted(set(summary.get("candles", {})) | set(summary.get("funding", {})))
    rejected = f", {summary['rejected']} rejected (see data_quality_logs)" if summary.get("rejected") else ""
    lines.append(f"{summary.get('stored', 0)} rows stored for {len(pairs)} symbol{'s' if len(pairs) != 1 else ''}"
                 f"{rejected}")
    return "\n".join(lines)


def ingest_news_file(settings: Settings, path: Path, symbols: list[str] | None, as_json: bool = False) -> None:
    """Score a file of news items into sentiment_scores; a file that cannot be read exits with status 2."""
    from brain_tasks.service.feeds import ingest_news
    from brain_tasks.errors import DataError

    try:
        summary = ingest_news(_engine(settings), path, symbols=symbols, keywords=settings.sentiment_keywords)
    except DataError as exc:
        click.echo(f"brain-tasks: {exc}", err=True)
        raise SystemExit(2) from None
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    click.echo(f"{summary['items']} items ({summary['duplicates']} duplicates, {summary['rejected']} rejected, "
               f"{summary['unattributed']} about no symbol): {summary['stored']} hourly rows stored in sentiment_scores")
    for check, n in sorted(summary["findings"].items()):
        click.echo(f"  finding {check}: {n}")


class _Session:
    """What a command started: in embedded mode its worker process (checked while waiting) and its
    attempts (finished on the way out, so none is left pending and no message is replayed later)."""

    def __init__(self, worker: Any = None) -> None:
        self.worker, self.attempts = worker, []  # embedded: a brain_tasks.service.embedded.EmbeddedWorker

    def check(self, _status: Any = None) -> None:
        if self.worker is None:
            return
        from brain_tasks.service.embedded import WorkerDied

        try:
            self.worker.check()  # alive, and answering once it had time to start
        except WorkerDied as exc:
            raise click.ClickException(f"the embedded worker died (exit code {exc.returncode}); "
                                       f"unfinished symbols are cancelled; see {self.worker.log_path}") from None
        except TimeoutError as exc:
            raise click.ClickException(f"{exc}; unfinished symbols are cancelled") from None


@contextlib.contextmanager
def _workers(settings: Settings) -> Iterator[_Session]:
    """Embedded: a local worker process for the duration of the command; production: nothing."""
    if not settings.embedded:
        yield _Session()
        return
    from brain_tasks.service.embedded import CRASH_WARNING, embedded_worker, finish_attempts

    click.secho(CRASH_WARNING, fg="yellow", err=True)
    session = _Session()
    reason = "the command stopped before this symbol finished"
    try:
        with embedded_worker(settings) as worker:
            session.worker = worker
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
            done = sum(counts.get(state, 0) for state in (Status.OK, Status.FAILED, Status.STALE))
            if done > shown:
                bar.update(done - shown, f"{counts.get(Status.OK, 0)} done, {counts.get(Status.FAILED, 0)} failed"
                           + (f", {counts[Status.STALE]} stale" if counts.get(Status.STALE) else ""))
                shown = done

        try:
            return client.wait(handle, timeout=timeout, poll=0.5, on_poll=progress)
        except TimeoutError as exc:
            raise click.ClickException(str(exc)) from None


def _print_run(status: dict[str, Any]) -> None:
    click.echo(f"run {status['run_id']} attempt {status.get('attempt_id')}: {status['state']}  {status['counts']}")
    for symbol, info in sorted(status["symbols"].items()):
        if info["state"] != Status.OK:
            click.echo(f"  {symbol}: {info['state']}  {info.get('error') or ''}")
        for model, error in sorted((info.get("failed_models") or {}).items()):
            click.echo(f"  {symbol}: {model} not trained: {error}")


def _client(settings: Settings) -> Any:
    from brain_tasks.client import BrainClient

    # Embedded mode: the command runs its own worker (`_workers`), so the client must not start another.
    return BrainClient(settings, run_embedded=False)


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


def run_retrains(client: Any, groups: list[tuple[list[str], list[str]]], as_of: str,
                 session: _Session) -> list[dict[str, Any]]:
    """Enqueue one retrain per (symbols, models) group, then follow each to its end: the worker runs
    them side by side instead of idling at the end of each."""
    handles = []
    for symbols, models in groups:
        handle = client.retrain(symbols, models=models, as_of=as_of)
        session.attempts.append(handle.attempt_id)
        click.echo(f"enqueued brain_tasks.daily_retrain: run {handle.run_id} attempt {handle.attempt_id} "
                   f"({len(symbols)} symbols x {', '.join(models)})")
        handles.append((handle, symbols))
    statuses = []
    for handle, symbols in handles:
        statuses.append(_follow(client, handle, symbols, 6 * 3600, session))
        _print_run(statuses[-1])
    return statuses


@main.command()
@click.option("--symbols", required=True, help="comma-separated pairs, e.g. ETH/BTC,LTC/BTC")
@click.option("--models", default=None, help="comma-separated model types (default: BRAIN_MODELS)")
@click.option("--as-of", "as_of", default=None, help="YYYY-MM-DD: train on data up to that day (default: today, UTC)")
@click.option("--wait/--no-wait", default=False, help="follow the run (always, in embedded mode)")
def retrain(symbols: str, models: str | None, as_of: str | None, wait: bool) -> None:
    """Enqueue (or, embedded, run) the daily retrain fan-out."""
    from brain_tasks.intake import check_as_of, check_models, check_symbols

    s = get_settings()
    # Refuse a bad request before starting a worker or enqueueing anything.
    client = _client(s)
    check_as_of(as_of), check_models(_csv(models) or s.models)
    client._check_known(check_symbols(_csv(symbols)))
    with _workers(s) as session:
        status = run_retrain(client, _csv(symbols), _csv(models) or None, as_of, wait or s.embedded,
                             session=session)
    if status and status["state"] in (Status.FAILED, Status.STALE):
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
    skipped = details.get("skipped") or {}
    for symbol in sorted(skipped):
        why = skipped[symbol] if isinstance(skipped, dict) else ""
        click.echo(f"  {symbol}: skipped: {why or 'no reason recorded'}")
    for symbol, reason in sorted((details.get("rollbacks") or {}).items()):
        click.echo(f"  {symbol}: ROLLED BACK: {reason}")
    audit = details.get("signal_audit")
    if audit:
        click.echo(f"  signal audit: {audit['audited']} served signals decided again, {audit['mismatches']} differ"
                   + (" (brain-tasks signals --audit)" if audit["mismatches"] else ""))
        for symbol, first in sorted((audit.get("mismatched") or {}).items()):
            click.echo(f"  {symbol}: audit: first mismatch at {first['ts']}: {first['note']}")
    return status


@main.command()
@click.option("--as-of", "as_of", default=None, help="YYYY-MM-DD: analyse data up to that day (default: today, UTC)")
@click.option("--wait/--no-wait", default=False, help="follow the run (always, in embedded mode)")
def nightly(as_of: str | None, wait: bool) -> None:
    """Enqueue (or run) the nightly analysis: live check and rollback, drift, importance trends."""
    from brain_tasks.intake import check_as_of

    s = get_settings()
    check_as_of(as_of)
    _schema(s)
    with _workers(s) as session:
        run_nightly(_client(s), as_of, wait or s.embedded, session=session)


def models_table(settings: Settings, symbol: str | None = None) -> str:
    """The registry as a readable table: versions, status, per-regime choice, key metrics."""
    from brain_tasks.brain import registry
    from brain_tasks.ml.metrics import loses_to_flat
    from brain_tasks.vocabulary import LOSES_TO_FLAT, ChampionStatus

    engine = _engine(settings)
    reg = registry.registry_table(engine, symbol)
    if reg.empty:
        return "no models in the registry yet" + (f" for {symbol}" if symbol else "")
    choices = {s: registry.regime_choice(engine, s) for s in reg["symbol"].unique()}

    def chosen(row: Any) -> str:
        mine = [f"{regime}({c['confidence'] or 0:.2f})" for regime, c in sorted(choices[row.symbol].items())
                if c["model_type"] == row.model_type and c["version"] == row.version]
        return ", ".join(mine) or "-"

    reg["regimes"] = [chosen(r) for r in reg.itertuples()]
    reg["vs_flat"] = ["loses" if loses_to_flat({k: getattr(r, k, None) for k in ("sharpe", "total_return")})
                      else "-" for r in reg.itertuples()]
    cols = [c for c in ["symbol", "model_type", "version", "as_of", "status", "composite_score", "sharpe",
                        "total_return", "max_drawdown", "psr", "vs_flat", "regimes"] if c in reg]
    lines = [reg[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}")]
    for r in reg[(reg["status"] == ChampionStatus.CHAMPION) & (reg["vs_flat"] == "loses")].itertuples():
        lines.append(f"{r.symbol}: champion {r.model_type} v{r.version} is {LOSES_TO_FLAT} (out-of-sample Sharpe "
                     f"{r.sharpe:.2f}, total return {r.total_return:.1%}); it stays the reference, each regime "
                     "trades its own choice")
    flat = []
    for sym, cs in sorted(choices.items()):
        idle = sorted(regime for regime, c in cs.items() if not c["tradeable"])
        if idle:
            flat.append(f"{sym} (every regime)" if len(idle) == len(cs) else f"{sym} ({', '.join(idle)})")
    if flat:
        lines.append("not traded, no edge over flat with enough evidence: " + "; ".join(flat))
    return "\n".join(lines)


@main.command()
@click.option("--symbol", default=None, help="one symbol (default: all)")
def models(symbol: str | None) -> None:
    """Show the registry: versions, champion, per-regime choice, metrics."""
    from brain_tasks.intake import check_symbol

    s = get_settings()
    if symbol:
        check_symbol(symbol)
    _schema(s)
    click.echo(models_table(s, symbol))


@main.command()
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="the directory to write index.html into")
def report(out: Path) -> None:
    """Write an HTML report with plots."""
    from brain_tasks.report import write_report

    s = get_settings()
    _schema(s)
    path = write_report(_engine(s), out)
    click.echo(f"report written to {path}")


@main.command()
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("report"),
              show_default=True, help="the directory of the HTML report")
@click.option("--symbols", default=None,
              help="a subset of the sample's pairs (default: all eleven, ten spot pairs and a perpetual)")
@click.option("--models", default=None,
              help="comma-separated model types for every pair (default: BRAIN_MODELS on every pair, "
                   "plus the lstm sequence model on ETH/BTC)")
@click.option("--replay/--no-replay", "with_replay", default=True, show_default=True,
              help="also replay the Brain's decisions on up to 3 of the sample's spot pairs over 5 daily steps "
                   "(2018-01-24..28) with 2 model types, and print the policy table")
def demo(out: Path, symbols: str | None, models: str | None, with_replay: bool) -> None:
    """Ingest the bundled real sample (11 pairs), retrain each with BRAIN_MODELS (3 model types) and
    its position sizer, lstm on ETH/BTC too, run the nightly analysis, replay the Brain's decisions on
    3 pairs, print a summary and the replay's policy table and write the report (embedded default; the
    README says how long it takes)."""
    from brain_tasks.brain import store
    from brain_tasks.brain.migrate import upgrade
    from brain_tasks.service.steps.collect import ingest_freqtrade
    from brain_tasks.report import write_report

    s = get_settings()
    click.echo(f"database {s.describe()['database']}; broker {s.describe()['broker']}")
    upgrade(s.database_url)
    engine = _engine(s)
    summary = ingest_freqtrade(engine, s.sample_dir, symbols=_csv(symbols) or None, timeframe=s.timeframe,
                               exchange=s.exchange)
    pairs = sorted(_csv(symbols) or summary.get("symbols") or [])
    if not pairs:  # before starting a worker for nothing
        raise click.ClickException(f"no {s.timeframe} candle files under {s.sample_dir} (BRAIN_SAMPLE_DIR)")
    click.echo(f"ingested {len(pairs)} pairs from {s.sample_dir}")
    # The sample's pairs end on different days (the spot pairs in January 2018, the perpetual in
    # November 2021): retrain and analyse each as of its own last day.
    by_day: dict[str, list[str]] = {}
    for pair in pairs:
        last = store.last_timestamp(engine, "candles", exchange=s.exchange, symbol=pair, timeframe=s.timeframe)
        if last is not None:
            by_day.setdefault(last.date().isoformat(), []).append(pair)
    client = _client(s)
    deep_models = list(dict.fromkeys([*s.models, *DEMO_EXTRA_MODELS]))
    statuses = []
    with _workers(s) as session:
        for day, day_pairs in sorted(by_day.items()):
            click.echo(f"\nas of {day}: {len(day_pairs)} symbols")
            deep = [] if models else [p for p in day_pairs if p in DEMO_DEEP_PAIRS]
            groups = [(deep, deep_models), ([p for p in day_pairs if p not in deep], _csv(models) or list(s.models))]
            statuses += run_retrains(client, [(p, m) for p, m in groups if p], day, session)
            run_nightly(client, day, wait=True, symbols=day_pairs, session=session)
        if with_replay:
            statuses.append(demo_replay(client, by_day, _csv(models) or list(s.models), session))
    click.echo("")
    click.echo(models_table(s))
    path = write_report(engine, out)
    click.echo(f"\nreport written to {path}")
    click.echo("Open the dashboard on this database:  .venv/bin/brain-tasks dashboard --insecure-local   "
               "then http://127.0.0.1:8050/\n(shared host: BRAIN_DASHBOARD_AUTH=user:password "
               ".venv/bin/brain-tasks dashboard --host 0.0.0.0)")
    if any(st and st["state"] in (Status.FAILED, Status.STALE) for st in statuses):
        raise SystemExit(1)


def demo_replay(client: Any, by_day: dict[str, list[str]], models: list[str],
                session: _Session) -> dict[str, Any] | None:
    """The demo's small replay (docs/replay.md): up to `DEMO_REPLAY_SYMBOLS` pairs whose data covers the
    window, `DEMO_REPLAY_MODELS` (the cheapest of the demo's model types), a step a day; prints the policy
    table and how long it took.  Skipped, saying why, when no ingested pair covers the window."""
    start, end = DEMO_REPLAY_WINDOW
    pairs = [p for day, day_pairs in sorted(by_day.items()) if day >= end for p in sorted(day_pairs)
             if p.count("/") == 1 and ":" not in p]  # spot pairs: the perpetual's history is elsewhere
    pairs = pairs[:DEMO_REPLAY_SYMBOLS]
    chosen = [m for m in DEMO_REPLAY_MODELS if m in models] or list(models[:2])
    if not pairs:
        click.echo(f"\nreplay skipped: no ingested spot pair has data up to {end}")
        return None
    click.echo(f"\nreplay of {', '.join(pairs)} x {', '.join(chosen)}, {start} .. {end}, a step a day")
    began = time.monotonic()
    status = run_replay_command(client, pairs, chosen, start, end, "1d", [], True, False, session)
    click.echo(f"replay took {time.monotonic() - began:.0f} s (open it: brain-tasks replays; the dashboard's "
               "/replays; the report's Replays section)")
    return status


@main.command("runs")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1),
              help="how many of the most recently started runs to show")
@click.option("--json", "as_json", is_flag=True, help="print the runs and their attempts as JSON")
def runs_command(limit: int, as_json: bool) -> None:
    """Recent runs, newest first, with their attempts (each enqueue of a run is a new attempt)."""
    s = get_settings()
    _schema(s)
    recent = _client(s).runs(limit)
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
    s = get_settings()
    _schema(s)
    info = _client(s).run_status(run_id, attempt_id)
    if info["state"] == Status.UNKNOWN:
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
        for model, error in sorted((row.get("failed_models") or {}).items()):
            click.echo(f"    {model} not trained: {error}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="the interface to listen on")
@click.option("--port", default=8050, show_default=True, type=int, help="the TCP port")
@click.option("--insecure-local", is_flag=True,
              help="serve without credentials, on 127.0.0.1 only (a laptop, the demo); every other use needs "
                   "BRAIN_DASHBOARD_AUTH=user:password or BRAIN_DASHBOARD_TOKEN")
def dashboard(host: str, port: int, insecure_local: bool) -> None:
    """The web dashboard, its JSON API (/api/, schema at /openapi.json) and Prometheus /metrics."""
    import uvicorn

    from brain_tasks.dashboard import create_app
    from brain_tasks.dashboard.auth import AuthConfigError

    s = get_settings()
    if insecure_local and host != "127.0.0.1":
        click.echo(f"brain-tasks: --insecure-local serves on 127.0.0.1 only, not on {host}", err=True)
        raise SystemExit(USAGE_ERROR)
    try:
        app = create_app(s, insecure_local=insecure_local)
    except AuthConfigError as exc:
        click.echo(f"brain-tasks: {exc}", err=True)
        raise SystemExit(USAGE_ERROR) from None
    _schema(s)
    click.echo(f"dashboard on http://{host}:{port}/ over {s.describe()['database']}"
               + ("  (no credentials: local only)" if insecure_local else ""))
    uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=True)


def signals_table(settings: Settings, symbol: str | None = None, limit: int = 50) -> str:
    """The newest signals served to the Engine, as a readable table."""
    import pandas as pd

    from brain_tasks.brain import signals as signal_rows

    rows = signal_rows.listing(_engine(settings), symbol, limit)
    if not rows:
        return "no signals yet" + (f" for {symbol}" if symbol else "")
    df = pd.DataFrame(rows)
    df["version"] = df["version"].map(lambda v: v or "-")
    df["stale"] = df["stale"].map(lambda v: "stale" if v else "")
    # Rows served before the gate: not judged (blank), not "in distribution".
    df["in_dist"] = df["in_distribution"].map(lambda v: "" if v is None else ("yes" if v else "NO"))
    df["model_age_h"] = df["model_age_seconds"].map(lambda v: None if v is None else v / 3600)
    cols = ["symbol", "ts", "regime", "model_type", "version", "prediction", "position", "size", "confidence",
            "tradeable", "stale", "in_dist", "dissimilarity", "model_age_h", "data_age_seconds", "served_at", "reason"]
    return df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")


def audit_table(settings: Settings, symbol: str | None = None, limit: int = 50) -> str:
    """The nightly audit's verdicts on served signals: counts, then the newest audited bars."""
    import pandas as pd

    from brain_tasks.brain import audits

    engine = _engine(settings)
    counts = audits.counts(engine, symbol)
    head = (f"{counts['audited']} signals audited, {counts['mismatches']} differ"
            + (f" (last audit {counts['last_audit']:%Y-%m-%d %H:%M} UTC)" if counts["last_audit"] else ""))
    rows = audits.listing(engine, symbol, limit=limit)
    if not rows:
        return head + "; no audit yet" + (f" for {symbol}" if symbol else "") + " (the nightly analysis audits)"
    df = pd.DataFrame(rows)
    df["same"] = df["same"].map(lambda v: "same" if v else "DIFFERS")
    return head + "\n" + df[["symbol", "ts", "model_type", "version", "same", "served_at", "audited_at", "note"]
                              ].to_string(index=False)


@main.command()
@click.option("--symbol", default=None, help="one symbol (default: all)")
@click.option("--limit", default=50, show_default=True, help="newest rows to show")
@click.option("--audit", "show_audit", is_flag=True,
              help="show the nightly audit of the served signals (same or different, and what differs)")
def signals(symbol: str | None, limit: int, show_audit: bool) -> None:
    """Show the signals served to the Engine, newest bar first (with --audit: their audit)."""
    s = get_settings()
    _schema(s)
    click.echo((audit_table if show_audit else signals_table)(s, symbol, limit))



# --- replays -------------------------------------------------------------------------------------

# `replay show --json` lists at most this many decisions unless asked for more: a replay of 1,000
# symbols x 250 steps x 8 policies holds 2 million, each listed once per regime.
SHOW_DECISIONS = 500


def replay_table(shown: dict[str, Any]) -> str:
    """`replay show`: the pooled policy table (Sharpe with its HAC standard error, total return, max
    drawdown, turnover, time in market, hit ratio, profit factor, p-value of the Sharpe difference against
    brain), the DSR of the best policy and the PBO with its blocks, then the symbols skipped."""
    lines = [f"replay {shown['replay_id']}: {shown['state']}  {', '.join(shown['symbols'])} x "
             f"{', '.join(shown['models'])}  {shown['start']} .. {shown['end']} every {shown['every']}"]
    policies = shown.get("policies") or {}
    if not policies:
        lines.append("  no pooled results yet")
    else:
        lines.append(f"  pooled over {shown.get('n_bars')} bars (equal-weight portfolio of the symbols walked)")
        lines.append(f"  {'policy':<30} {'sharpe':>8} {'± se':>7} {'return':>8} {'max dd':>8} {'turnover':>8} "
                     f"{'in mkt':>7} {'hit':>5} {'pf':>6} {'p vs brain':>10}")
        for name, m in sorted(policies.items(), key=lambda kv: -(kv[1].get("sharpe") or 0.0)):
            p = m.get("p_value")
            lines.append(f"  {name:<30} {m.get('sharpe', 0):>8.2f} {m.get('sharpe_se', 0):>7.2f} "
                         f"{m.get('total_return', 0):>8.2%} {m.get('max_drawdown', 0):>8.2%} {m.get('turnover', 0):>8.3f} "
                         f"{m.get('time_in_market', 0):>7.1%} {m.get('hit_ratio', 0):>5.2f} "
                         f"{min(m.get('profit_factor') or 0.0, 999.0):>6.2f} {'-' if p is None else f'{p:.3g}':>10}")
        dsr = shown.get("dsr") or {}
        if dsr:
            lines.append(f"  best policy {dsr.get('best')}: Sharpe {dsr.get('sharpe', 0):.2f}, DSR {dsr.get('dsr', 0):.3f} "
                         f"over {dsr.get('n_trials')} policies (luck alone would reach {dsr.get('benchmark_sharpe', 0):.2f})")
        pbo = shown.get("pbo_detail") or {}
        if pbo:
            lines.append(f"  PBO {pbo['pbo']:.2f} by CSCV: {pbo['n_blocks']} blocks of {pbo['bars_per_block']} bars, "
                         f"{pbo['n_combinations']} combinations, {pbo['n_policies']} policies")
        else:
            lines.append("  PBO: too few bars for 16 blocks of 2")
    for symbol, info in sorted((shown.get("per_symbol") or {}).items()):
        if info.get("state") != Status.OK:
            lines.append(f"  {symbol}: {info.get('state')}: {info.get('reason') or ''}")
    return "\n".join(lines)


def run_replay_command(client: Any, symbols: list[str], models: list[str], start: str, end: str, every: str,
                       grid: list[str], wait: bool, as_json: bool, session: _Session,
                       timeout: float = 24 * 3600) -> dict[str, Any] | None:
    from brain_tasks.service.replay_run import show

    handle = client.replay(symbols, models, start, end, every=every, grid=grid)
    session.attempts.append(handle.attempt_id)
    if not as_json:
        click.echo(f"enqueued brain_tasks.replay: replay {handle.run_id} attempt {handle.attempt_id}", err=True)
    if not wait:
        if as_json:
            click.echo(json.dumps({"replay_id": handle.run_id, "attempt_id": handle.attempt_id, "state": Status.PENDING}))
        return None
    try:
        status = _follow(client, handle, symbols, timeout, session)
    except BaseException:
        if session.worker is not None:
            # Embedded, the worker stops with the command: the replay is cancelled as its attempt is,
            # unless the pooling step got there first.  With a broker the workers carry on.
            from brain_tasks.service.replay_run import abandon

            abandon(client.engine, handle.run_id)
        raise
    shown = show(client.engine, handle.run_id, max_decisions=SHOW_DECISIONS) or {"replay_id": handle.run_id}
    if as_json:
        click.echo(json.dumps({**shown, "attempt_id": handle.attempt_id, "run_state": status["state"]}, default=str))
    else:
        click.echo(replay_table(shown))
    return status


@main.group(invoke_without_command=True)
@click.option("--symbols", default=None, help="comma-separated pairs, e.g. ETH/BTC,LTC/BTC")
@click.option("--models", default=None, help="comma-separated model types (default: BRAIN_MODELS)")
@click.option("--from", "start", default=None, help="YYYY-MM-DD: the first traded day (step t_1 is its midnight)")
@click.option("--to", "end", default=None, help="YYYY-MM-DD: the last traded day")
@click.option("--every", default="1d", show_default=True, help="step length, whole days (1d, 2d, 1w)")
@click.option("--grid", multiple=True,
              help="SETTING=V1,V2: a brain[SETTING=V] policy per value (dsr_level, min_evidence_bars); repeatable")
@click.option("--wait/--no-wait", default=False, help="follow the replay and print its table (always, embedded)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (with replay_id) instead of a table")
@click.pass_context
def replay(ctx: click.Context, symbols: str | None, models: str | None, start: str | None, end: str | None,
           every: str, grid: tuple[str, ...], wait: bool, as_json: bool) -> None:
    """Replay the Brain's decisions over history, policy against policy (docs/replay.md); `replay show
    ID` prints a stored replay."""
    if ctx.invoked_subcommand is not None:
        return
    from brain_tasks.service.replay_plan import plan_replay

    s = get_settings()
    if not symbols:
        raise click.UsageError("--symbols is required (or: brain-tasks replay show ID)")
    _schema(s)
    client = _client(s)
    # Refuse a bad request before starting a worker or enqueueing anything (the client checks again).
    plan_replay(client.engine, s, _csv(symbols), _csv(models) or s.models, start, end, every, list(grid))
    with _workers(s) as session:
        status = run_replay_command(client, _csv(symbols), _csv(models) or list(s.models), start, end, every,
                                    list(grid), wait or s.embedded, as_json, session)
    if status and status["state"] == Status.FAILED:
        raise SystemExit(1)


def _decision_cap(_ctx: click.Context, _param: click.Parameter, value: str) -> int | None:
    """--decisions: a count >= 0, or 'all' (None)."""
    if value == "all":
        return None
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise click.BadParameter(f"{value!r}: a whole number >= 0, or all")
    return n


@replay.command("show")
@click.argument("replay_id")
@click.option("--json", "as_json", is_flag=True,
              help="print one JSON object: replay_id, policies (pooled metrics with p_value), pbo, dsr, decisions "
                   "(with decisions_total and decisions_truncated)")
@click.option("--decisions", "max_decisions", default=str(SHOW_DECISIONS), show_default=True, callback=_decision_cap,
              help="with --json: list at most N (symbol, step, policy) decisions, each as one row per regime; "
                   "'all' for every one, 0 for none")
@click.option("--symbol", default=None, help="with --json: list only this symbol's decisions")
def replay_show(replay_id: str, as_json: bool, max_decisions: int | None, symbol: str | None) -> None:
    """A stored replay's policy table, DSR and PBO (with --json: its decisions too, capped by --decisions)."""
    from brain_tasks.service.replay_run import show

    s = get_settings()
    _schema(s)
    shown = show(_engine(s), replay_id, symbol=symbol, max_decisions=max_decisions)
    if shown is None:
        raise click.ClickException(f"no replay {replay_id}")
    click.echo(json.dumps(shown, default=str) if as_json else replay_table(shown))


@main.command("replays")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1), help="newest replays to list")
@click.option("--json", "as_json", is_flag=True, help="print the list as JSON")
def replays_command(limit: int, as_json: bool) -> None:
    """Stored replays, newest first, with their state and headline statistics."""
    from brain_tasks.brain import replays as stored

    s = get_settings()
    _schema(s)
    rows = stored.list_replays(_engine(s), limit)
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    if not rows:
        click.echo("no replays yet")
        return
    for r in rows:
        h = r["headline"]
        extra = "" if h["pbo"] is None else (f"  brain Sharpe {h['brain_sharpe'] or 0:.2f}, best {h['best']} "
                                             f"(DSR {h['dsr'] or 0:.2f}), PBO {h['pbo']:.2f}")
        click.echo(f"{r['replay_id']}  {r['state']:<9} {','.join(r['symbols'])} x {','.join(r['models'])}  "
                   f"{r['start']}..{r['end']}/{r['every']}{extra}")


if __name__ == "__main__":
    main()
