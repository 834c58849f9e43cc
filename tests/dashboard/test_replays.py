"""The replay pages and their JSON routes over a replay written through `brain/replays.py`
(tests/replay_rows.py): the statistics table with DSR and PBO, equity curves pooled and per symbol,
the brain policy's timeline with its promotion and rollback, escaping, 404s and the cache."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from brain_tasks.service import replay_view
from brain_tasks.brain import replays
from brain_tasks.dashboard import create_app
from brain_tasks.settings import Settings
from tests.dashboard.test_api import BEARER
from tests.replay_rows import EVIL_REASON, POLICIES, REPLAY_ID, SKIP_REASON, SKIPPED, SYMBOLS

BTC, ETH = SYMBOLS


@pytest.fixture
def client(dash_settings: Settings) -> TestClient:
    return TestClient(create_app(dash_settings))


def get(client: TestClient, path: str, **params: object) -> dict:
    resp = client.get(path, params=params, headers=BEARER)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_list_and_pooled_detail(client: TestClient, dash_url: str) -> None:
    listed = get(client, "/api/replays")
    assert [r["replay_id"] for r in listed] == [REPLAY_ID]
    head = listed[0]["headline"]
    assert head["best"] == "brain" and 0 <= head["pbo"] <= 1 and 0 <= head["dsr"] <= 1

    d = get(client, f"/api/replays/{REPLAY_ID}")
    assert d["pooled"] and d["symbol"] == replays.POOLED
    rows = d["statistics"]["rows"]
    assert [r["policy"] for r in rows] == ["brain", "newest:lightgbm", "newest:xgboost", "best_composite",
                                           "buy_and_hold", "flat"]
    keys = {"sharpe", "sharpe_se", "sortino", "max_drawdown", "total_return", "turnover", "time_in_market",
            "hit_ratio", "profit_factor", "p_value"}
    assert all(keys <= set(r) for r in rows)
    assert rows[0]["p_value"] is None and all(0 <= r["p_value"] <= 1 for r in rows[1:])
    assert rows[0]["is_best"] and not any(r["is_best"] for r in rows[1:])
    # The table is the stored pooled results, the DSR and PBO the replay's summary.
    stored = {r["policy"]: r["metrics"] for r in replays.results(sa.create_engine(dash_url), REPLAY_ID, replays.POOLED)}
    assert rows[1]["sharpe"] == pytest.approx(stored["newest:lightgbm"]["sharpe"])
    pbo = d["statistics"]["pbo"]
    assert pbo["n_blocks"] == 16 and pbo["bars_per_block"] == 864 // 16 and pbo["n_policies"] == len(POLICIES)
    assert d["statistics"]["dsr"]["n_trials"] == len(POLICIES)
    # Every policy's pooled equity curve, starting near 1; the flat one stays at 1.
    assert list(d["curves"]) == [r["policy"] for r in rows]
    assert all(len(c["ts"]) == len(c["equity"]) == 864 for c in d["curves"].values())
    assert set(d["curves"]["flat"]["equity"]) == {1.0}
    # Pooled: no timeline, but every symbol's promotions and rollbacks; the skipped symbol with its reason.
    assert d["timeline"] is None
    assert [(e["symbol"], e["kind"]) for e in d["events"]] == [(BTC, "promote"), (ETH, "promote"),
                                                                (BTC, "rollback"), (ETH, "rollback")]
    skipped = next(s for s in d["symbols"] if s["symbol"] == SKIPPED)
    assert not skipped["walked"] and skipped["reason"] == SKIP_REASON


def test_symbol_detail_has_the_brain_timeline(client: TestClient) -> None:
    d = get(client, f"/api/replays/{REPLAY_ID}", symbol=BTC)
    assert not d["pooled"] and d["symbol"] == BTC
    assert len(d["curves"]) == len(POLICIES) and d["statistics"]["pbo"]["n_blocks"] == 16
    t = d["timeline"]
    assert t["regimes"] == ["low", "normal", "high", "extreme", "*"] and t["regime_labels"]["*"] == "other bars"
    assert [s["step"] for s in t["steps"]] == [1, 2, 3, 4]
    assert [s["choices"]["normal"] for s in t["steps"]] == ["flat", "xgboost v2", "xgboost v2", "xgboost v2"]
    assert t["steps"][0]["end"] == t["steps"][1]["start"], "a step's choice trades until the next step"
    assert t["steps"][-1]["end"] == d["curves"]["brain"]["ts"][-1]
    assert [(e["kind"], e["step"]) for e in t["events"]] == [("promote", 1), ("rollback", 3)]
    assert t["events"][1]["reason"] == EVIL_REASON
    assert client.get(f"/api/replays/{REPLAY_ID}", params={"symbol": "NOPE/USDT"}, headers=BEARER).status_code == 404
    assert client.get("/api/replays/replay-nope", headers=BEARER).status_code == 404
    # A skipped symbol is part of the replay: it answers, with nothing to show.
    skipped = get(client, f"/api/replays/{REPLAY_ID}", symbol=SKIPPED)
    assert skipped["statistics"]["rows"] == [] and skipped["curves"] == {}


def test_pages_render_escaped_and_link_each_other(client: TestClient) -> None:
    listing = client.get("/replays", headers=BEARER).text
    assert f'href="/replays/{REPLAY_ID}"' in listing and 'href="/replays" class="here"' in listing
    assert 'href="/replays"' in client.get("/", headers=BEARER).text, "the navigation links the replays"
    pooled = client.get(f"/replays/{REPLAY_ID}", headers=BEARER).text
    assert 'id="chart-replay-equity"' in pooled and 'id="chart-replay-timeline"' not in pooled
    assert re.search(r'<tr data-policy="brain" class="brain">', pooled)
    assert "16 blocks of 54 bars each" in pooled and "DSR</b> of the best policy (brain" in pooled
    assert f'<option value="{SKIPPED}"  disabled>{SKIPPED} (skipped)' in pooled
    page = client.get(f"/replays/{REPLAY_ID}", params={"symbol": BTC}, headers=BEARER).text
    assert 'id="chart-replay-timeline"' in page and f'<option value="{BTC}" selected' in page
    # A reason written like markup arrives as text, in the table and in the embedded chart data.
    assert "<script>alert" not in page and "&lt;script&gt;alert(" in page
    assert "\\u003cscript\\u003e" in page
    assert client.get(f"/replays/{REPLAY_ID}", params={"symbol": "NOPE"}, headers=BEARER).status_code == 404


def test_a_finished_replay_is_read_once(dash_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = sa.create_engine(dash_url)
    cache = replay_view.DetailCache()
    reads = []
    real = replays.curves
    monkeypatch.setattr(replays, "curves", lambda *a, **k: reads.append(a) or real(*a, **k))
    first = replay_view.replay_detail(engine, REPLAY_ID, BTC, cache=cache)
    assert replay_view.replay_detail(engine, REPLAY_ID, BTC, cache=cache) is first and len(reads) == 1
    replay_view.replay_detail(engine, REPLAY_ID, cache=cache)
    assert len(reads) == 2, "the pooled view is another entry"
    # Finishing again (a re-drive) is a new entry: the rows are read afresh.
    from brain_tasks.vocabulary import Status

    replays.set_state(engine, REPLAY_ID, Status.OK, finished=True)
    replay_view.replay_detail(engine, REPLAY_ID, BTC, cache=cache)
    assert len(reads) == 3
    engine.dispose()


def test_a_replay_run_links_its_replay(client: TestClient, dash_url: str) -> None:
    """A replay is an attempt like any run (kind `replay`, run id = replay id): its run page links the
    replay's page."""
    import datetime as dt

    from brain_tasks.brain.tables import TrainingRun
    from brain_tasks.vocabulary import Status

    stamp = dt.datetime(2024, 3, 5, tzinfo=dt.timezone.utc)
    run = dict(run_id=REPLAY_ID, as_of=dt.date(2024, 3, 4), models=["lightgbm"], details={}, started_at=stamp,
               finished_at=stamp, attempt_id="r1", kind="replay", redrives=0, error=None)
    engine = sa.create_engine(dash_url)
    with engine.begin() as conn:
        conn.execute(sa.insert(TrainingRun), [dict(run, symbol="*", state=Status.OK),
                                              dict(run, symbol=BTC, state=Status.OK)])
    engine.dispose()
    page = client.get(f"/runs/{REPLAY_ID}", headers=BEARER).text
    assert f'<a id="replay-link" href="/replays/{REPLAY_ID}">' in page
