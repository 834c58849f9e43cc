"""The nightly audit of served signals on SQLite and PostgreSQL: zero mismatches on the normal path; a
candle corrected after its signal was served is found, and the mismatch names the bar and the field."""

from __future__ import annotations

import pandas as pd
import pytest

from brain_tasks.brain import audits
from brain_tasks.service import audit, serving
from tests.test_serving import CUT, FIVE_MIN, SYMBOL, _store, _train


@pytest.fixture
def trained(brain_db_url):
    return _train(brain_db_url)


def _serve(engine, settings, candles, bars) -> None:
    """Bars arrive one by one and each is served live (recorded) at its close."""
    for ts in bars:
        _store(engine, candles[candles.ts == ts])
        serving.predict(engine, settings, SYMBOL, stamp=ts.to_pydatetime() + FIVE_MIN)


def test_audit_finds_nothing_on_the_normal_path_and_names_a_corrected_candle(trained):
    engine, settings, _manifest, candles = trained
    later = candles[(candles.ts >= CUT) & (candles.ts < CUT + pd.Timedelta(hours=1))].ts
    _serve(engine, settings, candles, later[:6])
    first = audit.audit_symbol(engine, settings, SYMBOL)
    assert first == {"audited": 6, "mismatches": 0, "first_mismatch": None}
    assert audit.audit_symbol(engine, settings, SYMBOL)["audited"] == 0  # audited once
    assert all(r["same"] and not r["corrections"] for r in audits.listing(engine, SYMBOL))

    _serve(engine, settings, candles, later[6:9])
    bar = later.iloc[7]
    served_close = float(candles.loc[candles.ts == bar, "close"].iloc[0])
    # The exchange corrects the bar's close after its signal was served.
    _store(engine, candles[candles.ts == bar].assign(close=served_close * 1.02))
    second = audit.audit_symbol(engine, settings, SYMBOL)
    assert second["audited"] == 3 and second["mismatches"] == 2  # the corrected bar and the one after it
    rows = {r["ts"]: r for r in audits.listing(engine, SYMBOL)}
    clean = rows[later.iloc[6].to_pydatetime()]
    assert clean["same"] and not clean["corrections"]  # decided before the corrected bar existed
    hit = rows[bar.to_pydatetime()]
    assert not hit["same"] and "prediction" in [d["field"] for d in hit["differences"]]
    assert {"kind": "candles", "ts": bar.isoformat(), "field": "close", "served": served_close,
            "now": served_close * 1.02} in hit["corrections"]
    assert f"candles {bar.isoformat()} close" in hit["note"]
    counts = audits.counts(engine, SYMBOL)
    assert (counts["audited"], counts["mismatches"]) == (9, 2)


def test_the_gauges_and_the_symbol_page_show_the_gates_and_the_audit(trained):
    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families

    from brain_tasks.dashboard.web import create_app

    engine, settings, manifest, candles = trained
    later = candles[(candles.ts >= CUT) & (candles.ts < CUT + pd.Timedelta(minutes=30))].ts
    _serve(engine, settings, candles, later)
    _store(engine, candles[candles.ts == later.iloc[-1]].assign(volume=1e9))  # corrected after serving
    assert audit.audit_symbol(engine, settings, SYMBOL)["mismatches"] == 1
    client = TestClient(create_app(settings, insecure_local=True))
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    [mismatch] = families["brain_signal_audit_mismatches"].samples
    assert mismatch.labels == {"symbol": SYMBOL} and mismatch.value == 1
    [age] = families["brain_champion_age_seconds"].samples
    assert age.value == (later.iloc[-1] - manifest.data_end).total_seconds()
    page = client.get(f"/symbols/{SYMBOL}").text
    assert 'id="signal-distribution"' in page and "inputs in distribution" in page and 'id="signal-model-age"' in page
    assert 'id="audit"' in page and "1</b> differ" in page and "volume" in page


def test_the_nightly_step_audits_and_the_summary_and_cli_report_it(trained, monkeypatch):
    from click.testing import CliRunner

    from brain_tasks import cli
    from brain_tasks.brain import runs
    from brain_tasks.service.steps.analyse import analyse_symbol
    from brain_tasks.service.steps.outcome import record_outcome, start_attempt

    engine, settings, _manifest, candles = trained
    later = candles[(candles.ts >= CUT) & (candles.ts < CUT + pd.Timedelta(minutes=20))].ts
    _serve(engine, settings, candles, later)
    _store(engine, candles[candles.ts == later.iloc[-1]].assign(high=1.0))  # a corrected high
    day = later.iloc[-1].date()
    start_attempt(engine, settings, "nightly", "nightly-test", "a1", day, [SYMBOL], [])
    state = analyse_symbol(engine, settings, SYMBOL, day)
    assert state.audit["audited"] == 4 and state.audit["mismatches"] == 1
    assert "high" in state.audit["first_mismatch"]["note"]
    record_outcome(engine, "a1", state)
    summary = runs.close_attempt(engine, "a1")
    assert summary["signal_audit"]["audited"] == 4 and summary["signal_audit"]["mismatches"] == 1
    assert set(summary["signal_audit"]["mismatched"]) == {SYMBOL}

    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    out = CliRunner().invoke(cli.main, ["signals", "--audit", "--symbol", SYMBOL])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("4 signals audited, 1 differ") and "DIFFERS" in out.output
    plain = CliRunner().invoke(cli.main, ["signals", "--symbol", SYMBOL]).output
    assert "in_dist" in plain and "yes" in plain
