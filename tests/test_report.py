"""The HTML report over a small but realistic Brain in SQLite."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from brain_tasks.brain.tables import (Base, Candle, DataQualityLog, FeatureDrift, FeatureImportance,
                                      ModelArtifact, ModelComparison, ModelManifest, RegimeChoice, ModelRegistry,
                                      RollbackLog, TrainingRun)
from brain_tasks.errors import IntegrityError
from brain_tasks.report import equity_curve, load_symbol, write_report

UTC = dt.timezone.utc
DAY1, DAY2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
STAMP = dt.datetime(2024, 3, 2, 4, 0, tzinfo=UTC)
EVIL = "<script>alert(1)</script>"
EVIL_FEATURE = "<b>evil</b>"
# Unescaped, matplotlib would parse this as mathtext and fail on the unknown command.
MATH_FEATURE = "$\\bogus$"
BTC, ETH, SOL = "BTC/USDT", "ETH/USDT", "SOL/USDT"


def oos_bytes(seed: int, n: int = 400) -> bytes:
    """Walk-forward out-of-sample predictions in the stored Parquet layout."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-02-20", periods=n, freq="5min", tz="UTC")
    bar = rng.normal(0, 0.002, n)
    pred = bar + rng.normal(0, 0.002, n)
    frame = pd.DataFrame({
        "ts": ts, "fold": np.repeat(np.arange(4), n // 4), "pred": pred, "label": np.sign(bar),
        "bar_return": bar, "strategy_return": np.sign(pred) * bar,
        "regime": np.array(["low", "normal", "high", "extreme"])[(np.arange(n) // 37) % 4],
    })
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


class Brain:
    """Rows for a symbol's trained versions, written the way the tasks write them."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.seed = 0

    def version(self, symbol: str, model_type: str, version: int, as_of: dt.date, status: str) -> str:
        self.seed += 1
        data = oos_bytes(self.seed)
        digest = hashlib.sha256(data).hexdigest()
        common = dict(symbol=symbol, model_type=model_type, version=version, as_of=as_of,
                      config_hash="c0ffee", artifact_sha256="a" * 64)
        with self.engine.begin() as conn:
            conn.execute(sa.insert(ModelArtifact).values(sha256=digest, artifact_format="oos-parquet",
                                                         data=data, size_bytes=len(data), created_at=STAMP))
            conn.execute(sa.insert(ModelManifest).values(
                **common, oos_sha256=digest, hyperparameters={"num_leaves": 31}, config={"cost_bps": 5},
                feature_names=["ret_1", "vol_12"], feature_hash="f" * 64, dataset_digest="d" * 64,
                data_start=STAMP - dt.timedelta(days=30), data_end=STAMP, n_rows=400, code_version="0.1.0",
                seed=42, created_at=STAMP))
            conn.execute(sa.insert(ModelRegistry).values(
                **common, status=status, composite_score=0.1,
                created_at=STAMP, updated_at=STAMP))
        return digest

    def add(self, model: type, rows: list[dict]) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.insert(model), rows)


def comparison(symbol: str, model_type: str, rank: int, **metrics: float) -> dict:
    return dict(symbol=symbol, as_of=DAY2, config_hash="c0ffee", model_type=model_type, version=1 + (rank == 1),
                composite_score=0.3 / rank, rank=rank, is_best=rank == 1,
                metrics={"sharpe": 1.2 / rank, "sortino": 1.5, "max_drawdown": -0.12, "calmar": 0.8,
                         "profit_factor": 1.1, "hit_ratio": 0.52, **metrics})


def importance(symbol: str, model_type: str, version: int, method: str, features: list[str]) -> list[dict]:
    return [dict(symbol=symbol, model_type=model_type, version=version, method=method, feature=f,
                 importance=1.0 / (i + 1), rank=i + 1, as_of=DAY1) for i, f in enumerate(features)]


@pytest.fixture
def engine(tmp_path: Path):
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'brain.db'}")
    Base.metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def brain(engine: sa.Engine) -> Brain:
    return build_brain(engine)


def build_brain(engine: sa.Engine) -> Brain:
    """BTC: a champion from day 1 kept over two rejected day-2 versions; ETH: day-2 candidates,
    no champion yet; SOL: candles only."""
    b = Brain(engine)
    b.version(BTC, "lightgbm", 1, DAY1, "champion")
    b.version(BTC, "lightgbm", 2, DAY2, "rejected")
    b.version(BTC, "xgboost", 1, DAY2, "rejected")
    b.version(ETH, "lightgbm", 1, DAY2, "candidate")
    b.version(ETH, "xgboost", 1, DAY2, "candidate")
    # The current per-regime choice (regime_choices) is ETH's day-2 one; BTC's day-2 selection found nothing
    # to choose (both versions rejected), which cleared its day-1 choice.
    b.add(RegimeChoice, [
        dict(symbol=ETH, regime=regime, model_type=model, version=1, confidence=conf, tradeable=True, reason=why,
             as_of=DAY2, details={}, updated_at=STAMP)
        for regime, model, conf, why in (("high", "lightgbm", 0.55, "calm"), ("low", "xgboost", 0.91, EVIL),
                                         ("normal", "xgboost", 0.7, ""))])
    b.add(ModelComparison, [comparison(BTC, "lightgbm", 1, n_trades=41.0), comparison(BTC, "xgboost", 2),
                            dict(comparison(ETH, "xgboost", 1), version=1), dict(comparison(ETH, "lightgbm", 2))])
    features = [MATH_FEATURE] + [f"feat_{i:02d}" for i in range(1, 20)]
    b.add(FeatureImportance, importance(BTC, "lightgbm", 1, "shap", features)
          + importance(BTC, "lightgbm", 1, "correlation", features[::-1])
          + importance(ETH, "xgboost", 1, "permutation", features[:5]))
    b.add(RollbackLog, [dict(symbol=BTC, as_of=DAY1, config_hash="c0ffee", action="promote",
                             model_type="lightgbm", from_version=None, to_version=1,
                             reason="no champion yet", stats={}, created_at=STAMP),
                        dict(symbol=BTC, as_of=DAY2, config_hash="c0ffee", action="rollback",
                             model_type="lightgbm", from_version=1, to_version=1, reason=EVIL,
                             stats={"p_value": 0.01}, created_at=STAMP)])
    drift_common = dict(symbol=BTC, as_of=DAY2, psi_threshold=0.2, ks_stat=0.3, reference_start=STAMP,
                        reference_end=STAMP, current_start=STAMP, current_end=STAMP, n_reference=720,
                        n_current=168)
    b.add(FeatureDrift, [dict(drift_common, feature=EVIL_FEATURE, psi=0.9, ks_pvalue=0.0001, drifted=True),
                         dict(drift_common, feature="stable_feature", psi=0.01, ks_pvalue=0.8, drifted=False)])
    quality = dict(source="binance", timeframe="5m", data_kind="candles", severity="warning", details={},
                   ts_end=None, first_seen=STAMP, last_seen=STAMP, resolved_at=None)
    b.add(DataQualityLog, [
        dict(quality, symbol=ETH, check="gap", ts_start=STAMP, resolved=False),
        dict(quality, symbol=ETH, check="gap", ts_start=STAMP - dt.timedelta(hours=1), resolved=False),
        dict(quality, symbol=ETH, check="gap", ts_start=STAMP - dt.timedelta(hours=2), resolved=True),
        dict(quality, symbol=ETH, check="nan", ts_start=STAMP, resolved=False, severity="error"),
    ])
    run = dict(as_of=DAY2, models=["lightgbm", "xgboost"], details={}, started_at=STAMP, finished_at=STAMP,
               attempt_id="a1", kind="retrain", redrives=0)
    b.add(TrainingRun, [dict(run, run_id="daily-2024-03-02-abc", symbol="*", state="partial", error="1 of 3 failed"),
                        dict(run, run_id="daily-2024-03-02-abc", symbol=BTC, state="succeeded", error=None),
                        dict(run, run_id="daily-2024-03-02-abc", symbol=SOL, state="failed",
                             error="no 5m candles stored for 'SOL/USDT'")])
    b.add(Candle, [dict(exchange="binance", symbol=SOL, timeframe="5m", ts=STAMP, open=1.0, high=1.0, low=1.0,
                        close=1.0, volume=0.0)])
    return b


def test_report_shows_every_symbol_with_plots_and_tables(brain: Brain, tmp_path: Path) -> None:
    path = write_report(brain.engine, tmp_path / "out")
    assert path == tmp_path / "out" / "index.html"
    page = path.read_text(encoding="utf-8")
    # BTC and ETH: equity, regime timeline, importance; SOL has no model and no plot.
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', page)
    assert sorted(alt for alt, _ in images) == sorted(
        f"{s} {kind}" for s in (BTC, ETH)
        for kind in ("out-of-sample equity curves", "drawdown", "regime timeline", "feature importance"))
    assert page.count("<img") == 8
    assert all(base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n") for _, data in images)
    for symbol in (BTC, ETH, SOL):
        assert f">{symbol}</h2>" in page
    assert page.index(f">{BTC}</h2>") < page.index(f">{ETH}</h2>") < page.index(f">{SOL}</h2>")
    # Strings from the database arrive escaped, never raw.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script" not in page
    assert "&lt;b&gt;evil&lt;/b&gt;" in page and EVIL_FEATURE not in page
    assert "http://" not in page and "https://" not in page
    # Tables: n_trades shown because it is in the metrics; open quality findings counted by check.
    assert "<th>n_trades</th>" in page and '<td class="num">41</td>' in page
    assert "<td>gap</td><td>warning</td><td class=\"num\">2</td>" in page
    assert "<td>nan</td><td>error</td><td class=\"num\">1</td>" in page
    assert "1 of 2 features drifted" in page and '<td class="num">1.0e-04</td>' in page
    assert "<td>low</td><td>xgboost v1</td><td class=\"num\">0.910</td>" in page
    assert page.count("&lt;script&gt;") == 2
    assert "the champion lightgbm v1 trades every regime" in page
    assert "no 5m candles stored for &#x27;SOL/USDT&#x27;" in page
    # A symbol without a model gets a short section: no empty tables.
    sol = page[page.index(f">{SOL}</h2>"):page.index('<h2 id="runs">')]
    assert "No model yet" in sol and "Rollback history" not in sol and "Training runs" in sol


def test_report_on_migrated_databases(brain_db_url: str, tmp_path: Path) -> None:
    """The same Brain written to the migrated schema, on SQLite and on PostgreSQL."""
    from brain_tasks.brain.db import make_engine

    brain = build_brain(make_engine(brain_db_url))
    page = write_report(brain.engine, tmp_path).read_text(encoding="utf-8")
    assert page.count("<img") == 8
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script" not in page
    assert "<td>gap</td><td>warning</td><td class=\"num\">2</td>" in page
    with brain.engine.begin() as conn:
        conn.execute(sa.update(ModelArtifact).values(data=b"tampered"))
    with pytest.raises(IntegrityError):
        write_report(brain.engine, tmp_path)


def test_overview_puts_the_champion_next_to_buy_and_hold(brain: Brain, tmp_path: Path) -> None:
    """Every champion's out-of-sample Sharpe, total return and drawdown, and the market over the same bars."""
    from brain_tasks.brain.tables import ModelMetric
    from brain_tasks.ml.metrics import bars_per_year, strategy_metrics

    brain.add(ModelMetric, [dict(symbol=BTC, model_type="lightgbm", version=1, evaluation="walk_forward", regime="all",
                                 metric=name, value=value, as_of=DAY1)
                            for name, value in (("sharpe", 0.10), ("total_return", -0.143), ("max_drawdown", -0.21))])
    page = write_report(brain.engine, tmp_path).read_text(encoding="utf-8")
    overview = page[page.index('<h2 id="overview">'):page.index("</table>", page.index('<h2 id="overview">'))]
    for header in ("Sharpe", "total return", "max drawdown", "buy &amp; hold return", "buy &amp; hold max DD",
                   "trades / flat"):
        assert f"<th>{header}</th>" in overview
    btc_row = overview[overview.index(f">{BTC}</a>"):].split("</tr>")[0]
    btc = load_symbol(brain.engine, BTC)
    bh = strategy_metrics(btc.focus_curve.bar_return, bars_per_year("5m"))
    assert "0.10" in btc_row and "-14.3%" in btc_row and "-21.0%" in btc_row
    assert f"{100 * bh['total_return']:+.1f}%" in btc_row and f"{100 * bh['max_drawdown']:+.1f}%" in btc_row
    # ETH has no champion: the best version's figures, marked as such; computed from its curve here.
    eth_row = overview[overview.index(f">{ETH}</a>"):].split("</tr>")[0]
    assert "none (best: xgboost v1)" in eth_row and eth_row.count("%") >= 4


def test_symbol_view_picks_champion_curves_and_importance(brain: Brain) -> None:
    btc = load_symbol(brain.engine, BTC)
    assert btc.latest_as_of == DAY2
    # The day-2 versions plus the champion kept from day 1, which is the only one marked.
    assert sorted((c.model_type, c.version, c.champion) for c in btc.curves) == [
        ("lightgbm", 1, True), ("lightgbm", 2, False), ("xgboost", 1, False)]
    assert btc.importance_method == "shap"
    assert [r.rank for r in btc.importance] == list(range(1, 16))
    assert btc.importance[0].feature == MATH_FEATURE
    # Day 2 chose nothing for BTC (both versions rejected): every regime falls back to the champion,
    # as BrainClient.current_choice does; the stale day-1 choices are not shown.
    assert btc.selection == []

    eth = load_symbol(brain.engine, ETH)
    assert eth.champion is None
    # Without a champion the best-ranked version is shown, with the only method it has.
    assert (eth.focus.model_type, eth.focus.version) == ("xgboost", 1)
    assert eth.importance_method == "permutation" and len(eth.importance) == 5
    assert eth.quality == [("gap", "warning", 2), ("nan", "error", 1)]
    assert [(regime, row and row.model_type) for regime, row, _choice in eth.selection] == [
        ("low", "xgboost"), ("normal", "xgboost"), ("high", "lightgbm"), ("extreme", None)]


def test_symbols_argument_limits_the_report(brain: Brain, tmp_path: Path) -> None:
    page = write_report(brain.engine, tmp_path, symbols=[ETH]).read_text(encoding="utf-8")
    assert f">{ETH}</h2>" in page and f">{BTC}</h2>" not in page
    assert page.count("<img") == 4


def test_equity_compounds_returns_and_treats_missing_bars_as_flat() -> None:
    equity = equity_curve(pd.Series([0.1, -0.5, np.nan, 0.2]))
    assert equity.tolist() == pytest.approx([1.1, 0.55, 0.55, 0.66])


def test_corrupted_artifact_raises_integrity_error(brain: Brain, tmp_path: Path) -> None:
    out = tmp_path / "report"
    previous = write_report(brain.engine, out, symbols=[ETH]).read_text(encoding="utf-8")
    digest = brain.version(ETH, "baseline", 1, DAY2, "candidate")
    with brain.engine.begin() as conn:
        conn.execute(sa.update(ModelArtifact).where(ModelArtifact.sha256 == digest)
                     .values(data=oos_bytes(seed=999)))
    with pytest.raises(IntegrityError, match="corrupted"):
        write_report(brain.engine, out, symbols=[ETH])
    # The last good report stays in place, whole.
    assert (out / "index.html").read_text(encoding="utf-8") == previous
    assert [p.name for p in out.iterdir()] == ["index.html"]


def test_missing_artifact_raises_integrity_error(brain: Brain, tmp_path: Path) -> None:
    digest = brain.version(ETH, "baseline", 1, DAY2, "candidate")
    with brain.engine.begin() as conn:
        conn.execute(sa.delete(ModelArtifact).where(ModelArtifact.sha256 == digest))
    with pytest.raises(IntegrityError, match="missing"):
        write_report(brain.engine, tmp_path, symbols=[ETH])


def test_empty_database_says_so(engine: sa.Engine, tmp_path: Path) -> None:
    page = write_report(engine, tmp_path).read_text(encoding="utf-8")
    assert "The Brain is empty" in page and "<img" not in page


def test_database_without_schema_says_to_migrate(tmp_path: Path) -> None:
    bare = sa.create_engine(f"sqlite:///{tmp_path / 'bare.db'}")
    try:
        page = write_report(bare, tmp_path).read_text(encoding="utf-8")
    finally:
        bare.dispose()
    assert "brain-tasks db upgrade" in page and "<img" not in page


def test_report_has_a_replay_section_with_its_equity_and_table(brain: Brain, tmp_path: Path) -> None:
    """A replay written through brain/replays.py: the pooled equity per policy, the statistics table
    (brain first, p-values against it, the best policy marked), DSR, PBO with its blocks, the brain
    policy's promotions and rollbacks (reasons escaped) and the symbol it skipped, with its reason."""
    from tests.replay_rows import EVIL_REASON, REPLAY_ID, SKIP_REASON, SKIPPED, write_replay

    write_replay(brain.engine)
    page = write_report(brain.engine, tmp_path).read_text(encoding="utf-8")
    assert '<li><a href="#replays">Replays</a></li>' in page
    section = page[page.index('<h2 id="replays">'):page.index('<h2 id="runs">')]
    assert f"<h3>{REPLAY_ID}</h3>" in section
    assert re.findall(r'<img alt="([^"]*)"', section) == [f"replay {REPLAY_ID} pooled equity per policy"]
    head = re.search(r"<table><tr>(.*?)</tr>", section).group(1)
    assert re.findall(r"<th>(.*?)</th>", head) == ["policy", "Sharpe", "HAC SE", "Sortino", "max drawdown",
                                                  "total return", "turnover / bar", "time in market", "hit ratio",
                                                  "profit factor", "p vs brain"]
    policies = re.findall(r"<tr(?: class=\"best\")?><td>(?:<b>)?([a-z_:]+)(?:</b>)?</td>", section)
    assert policies[:6] == ["brain", "newest:lightgbm", "newest:xgboost", "best_composite", "buy_and_hold", "flat"]
    assert '<tr class="best"><td><b>brain</b></td>' in section
    assert "16 blocks of 54 bars each" in section and "over 6 policies tried" in section
    assert html_escaped(EVIL_REASON) in section and "<script" not in page
    assert f"<td>{SKIPPED}</td><td>skipped</td><td>{SKIP_REASON}</td>" in section
    assert page.count("<img") == 9  # the 8 of the symbols and the replay's


def html_escaped(text: str) -> str:
    import html

    return html.escape(text)
