"""The JSON API against its own OpenAPI schema, authentication, the overview's server-side sort /
filter / paging, graceful absence of the signals table, and /metrics through prometheus-client's parser."""

from __future__ import annotations

import base64
import re

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from brain_tasks.dashboard import create_app
from brain_tasks.dashboard.auth import AuthConfigError
from brain_tasks.settings import Settings
from tests.dashboard.conftest import AUTH, N_EXTRA, TOKEN, extra_symbol
from tests.replay_rows import REPLAY_ID
from tests.test_report import BTC, ETH, SOL

RUN_ID = "daily-2024-03-02-abc"
PATH_VALUES = {"symbol": BTC, "run_id": RUN_ID, "replay_id": REPLAY_ID}
BASIC = {"Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()}
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(dash_settings: Settings) -> TestClient:
    return TestClient(create_app(dash_settings))


def schema_paths(client: TestClient) -> list[str]:
    schema = client.get("/openapi.json", headers=BEARER).json()
    paths = []
    for template, operations in schema["paths"].items():
        assert set(operations) == {"get"}, f"{template}: the API is read-only"
        paths.append(re.sub(r"\{(\w+)(:path)?\}", lambda m: PATH_VALUES[m.group(1)], template))
    return paths


def test_every_schema_path_answers_with_credentials_and_refuses_without(client: TestClient) -> None:
    paths = schema_paths(client)
    assert {"/api/overview", "/api/symbols", f"/api/symbols/{BTC}", "/api/runs", f"/api/runs/{RUN_ID}",
            "/api/quality", "/api/replays", f"/api/replays/{REPLAY_ID}", "/metrics"} <= set(paths)
    for path in [*paths, "/openapi.json", "/", f"/symbols/{BTC}", "/runs", f"/runs/{RUN_ID}", "/quality",
                 "/replays", f"/replays/{REPLAY_ID}", f"/replays/{REPLAY_ID}?symbol={BTC}",
                 "/static/dashboard.css", "/static-vendor/plotly.min.js"]:
        for headers in (BASIC, BEARER):
            assert client.get(path, headers=headers).status_code == 200, path
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert refused.headers["WWW-Authenticate"].startswith("Basic")
        for wrong in ({"Authorization": "Bearer nope"},
                      {"Authorization": "Basic " + base64.b64encode(b"operator:wrong").decode()},
                      {"Authorization": "Basic !!!"}):
            assert client.get(path, headers=wrong).status_code == 401, (path, wrong)


def test_a_token_alone_challenges_for_a_bearer(dash_settings: Settings) -> None:
    settings = Settings(**{**dash_settings.__dict__, "dashboard_auth": None})
    client = TestClient(create_app(settings))
    assert client.get("/api/symbols", headers=BASIC).status_code == 401
    assert client.get("/api/symbols").headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/api/symbols", headers=BEARER).status_code == 200


def test_refuses_to_start_without_credentials(dash_settings: Settings) -> None:
    bare = Settings(**{**dash_settings.__dict__, "dashboard_auth": None, "dashboard_token": None})
    with pytest.raises(AuthConfigError):
        create_app(bare)
    with pytest.raises(AuthConfigError):
        create_app(Settings(**{**bare.__dict__, "dashboard_auth": "no-colon"}))
    assert TestClient(create_app(bare, insecure_local=True)).get("/api/symbols").status_code == 200


def test_cli_refuses_without_credentials_and_insecure_local_elsewhere(dash_settings: Settings,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from brain_tasks import cli

    bare = Settings(**{**dash_settings.__dict__, "dashboard_auth": None, "dashboard_token": None})
    monkeypatch.setattr(cli, "get_settings", lambda: bare)
    monkeypatch.setattr(cli, "_schema", lambda settings: None)
    result = CliRunner().invoke(cli.main, ["dashboard", "--port", "1"])
    assert result.exit_code == 2 and "BRAIN_DASHBOARD_AUTH" in result.output
    result = CliRunner().invoke(cli.main, ["dashboard", "--insecure-local", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "127.0.0.1 only" in result.output


def overview(client: TestClient, **params: object) -> dict:
    resp = client.get("/api/overview", params=params, headers=BEARER)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_overview_sorts_filters_and_pages_in_the_server(client: TestClient) -> None:
    everything = overview(client, per_page=500)
    assert everything["total"] == everything["matched"] == 3 + N_EXTRA
    by_sharpe = overview(client, sort="sharpe", order="desc")
    assert [r["symbol"] for r in by_sharpe["rows"][:2]] == [ETH, BTC]
    assert all(r["sharpe"] is None for r in by_sharpe["rows"][2:]), "missing values sort last"
    assert [r["symbol"] for r in overview(client, sort="sharpe", order="asc")["rows"][:2]] == [BTC, ETH]
    btc = next(r for r in by_sharpe["rows"] if r["symbol"] == BTC)
    assert btc["champion"] == "lightgbm v1" and btc["total_return"] == pytest.approx(-0.143)
    assert btc["max_drawdown"] == pytest.approx(-0.21) and btc["live_sharpe"] == pytest.approx(-0.4)
    # BTC's buy-and-hold is computed from its out-of-sample bars; ETH's is its stored comparison row.
    assert btc["bh_total_return"] is not None and btc["excess_return"] == pytest.approx(
        btc["total_return"] - btc["bh_total_return"])
    eth = next(r for r in by_sharpe["rows"] if r["symbol"] == ETH)
    assert eth["bh_total_return"] == pytest.approx(0.05) and eth["tradeable"] == "trades"
    assert eth["tradeable_regimes"] == 3 and eth["open_findings"] == 3
    assert btc["drifted_features"] == 1 and btc["drift_features"] == 2 and btc["run_state"] == "succeeded"
    sol = overview(client, q="sol")
    assert [r["symbol"] for r in sol["rows"]] == [SOL] and sol["rows"][0]["run_state"] == "failed"
    assert sol["rows"][0]["stale"] is True and sol["rows"][0]["tradeable"] == "none"
    assert [r["symbol"] for r in overview(client, run_state="failed")["rows"]] == [SOL]
    assert {r["symbol"] for r in overview(client, findings=True)["rows"]} == {ETH}
    assert overview(client, stale=False)["matched"] == N_EXTRA
    page2 = overview(client, per_page=25, page=2, q="X0")
    assert page2["pages"] == 3 and page2["matched"] == N_EXTRA
    assert [r["symbol"] for r in page2["rows"]] == [extra_symbol(i) for i in range(25, 50)]
    newest = overview(client, sort="data_age_seconds", order="asc", per_page=1)["rows"][0]
    assert newest["symbol"] == extra_symbol(0)
    assert client.get("/api/overview", params={"sort": "nonsense"}, headers=BEARER).status_code == 422


def test_symbol_detail_and_missing_signals_table(client: TestClient, dash_url: str) -> None:
    # A database from before the signals migration (0004): the page degrades instead of failing.
    engine = sa.create_engine(dash_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS signals"))
    engine.dispose()
    detail = client.get(f"/api/symbols/{BTC}", headers=BEARER).json()
    assert detail["champion"]["model_type"] == "lightgbm" and detail["signals_table"] is False
    perf = detail["performance"]
    assert len(perf["ts"]) == len(perf["equity"]) == len(perf["buy_and_hold"]) == len(perf["underwater"]) == 400
    assert [f["fold"] for f in perf["folds"]] == [0, 1, 2, 3] and perf["regimes"]
    assert max(perf["underwater"]) <= 0
    assert [e["action"] for e in detail["events"]] == ["promote", "rollback"]
    assert detail["importance"]["features"] and detail["importance"]["versions"] == ["lightgbm v1"]
    assert client.get("/api/symbols/NOPE/USDT", headers=BEARER).status_code == 404
    page = client.get(f"/symbols/{BTC}", headers=BEARER).text
    assert 'id="signals-missing"' in page and "&lt;script&gt;" in page and "<script>alert" not in page

    # Once the signals table exists (the serving work adds it), the page and the API show its rows.
    engine = sa.create_engine(dash_url)
    meta = sa.MetaData()
    signals = sa.Table("signals", meta, sa.Column("symbol", sa.String, primary_key=True),
                       sa.Column("ts", sa.String, primary_key=True), sa.Column("regime", sa.String),
                       sa.Column("model_type", sa.String), sa.Column("tradeable", sa.Boolean),
                       sa.Column("position", sa.Float))
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(signals), [dict(symbol=BTC, ts="2024-03-02T04:00:00+00:00", regime="high",
                                               model_type="flat", tradeable=False, position=0.0)])
    engine.dispose()
    detail = client.get(f"/api/symbols/{BTC}", headers=BEARER).json()
    assert detail["signals_table"] is True and detail["signals"][0]["regime"] == "high"
    btc = overview(client, q="BTC")["rows"][0]
    assert btc["regime_now"] == "high" and btc["tradeable"] == "flat"
    assert 'id="signals"' in client.get(f"/symbols/{BTC}", headers=BEARER).text


def test_runs_and_quality(client: TestClient) -> None:
    run = client.get(f"/api/runs/{RUN_ID}", headers=BEARER).json()
    assert run["finished"] and run["total"] == 2 and run["done"] == 2
    assert {s["symbol"]: s["state"] for s in run["attempts"][0]["symbols"]} == {BTC: "succeeded", SOL: "failed"}
    runs = client.get("/api/runs", headers=BEARER).json()
    assert runs["runs"][0]["counts"] == {"succeeded": 1, "failed": 1}
    assert runs["failures"][0]["symbol"] == SOL and "no 5m candles" in runs["failures"][0]["error"]
    assert client.get("/api/quality", headers=BEARER).json()["total"] == 3
    assert client.get("/api/quality", params={"status": "resolved"}, headers=BEARER).json()["total"] == 1
    assert client.get("/api/quality", params={"status": "all", "symbol": ETH}, headers=BEARER).json()["total"] == 4


def scrape(client: TestClient) -> dict[str, dict[tuple, float]]:
    text = client.get("/metrics", headers=BEARER).text
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("brain_"), family.name
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_parse_and_carry_the_brain(client: TestClient) -> None:
    m = scrape(client)
    assert m["brain_symbols"][()] == 3 + N_EXTRA
    ages = {dict(k)["symbol"]: v for k, v in m["brain_data_age_seconds"].items()}
    assert ages[extra_symbol(0)] < ages[extra_symbol(59)] < ages[SOL]
    sharpe = {tuple(dict(k).values()): v for k, v in m["brain_champion_sharpe"].items()}
    assert sharpe[("live", BTC)] == pytest.approx(-0.4) and sharpe[("walk_forward", ETH)] == pytest.approx(0.9)
    assert {dict(k)["symbol"] for k in m["brain_champion_age_seconds"]} == {BTC, ETH}
    assert m["brain_run_last_failed_symbols"][(("kind", "retrain"),)] == 1
    assert m["brain_run_last_state"][(("kind", "retrain"), ("state", "partial"))] == 1
    assert m["brain_drift_alarms"][(("symbol", BTC),)] == 1
    assert m["brain_data_quality_open_findings"][(("severity", "warning"), ("symbol", ETH))] == 2
    assert "brain_queue_depth" not in m, "no Redis broker: no queue depth"


def test_alert_rules_use_exposed_metric_names(client: TestClient) -> None:
    import yaml

    from brain_tasks.dashboard.prometheus import METRIC_NAMES
    from tests.workers import REPO

    assert set(scrape(client)) <= set(METRIC_NAMES)
    rules = yaml.safe_load((REPO / "deploy" / "alerts.yml").read_text())["groups"][0]["rules"]
    assert {"BrainDataStale", "BrainRunFailed"} <= {r["alert"] for r in rules}
    for rule in rules:
        assert set(re.findall(r"brain_[a-z_]+", rule["expr"])) <= set(METRIC_NAMES), rule["alert"]


@pytest.mark.redis
def test_queue_depth_from_redis(dash_settings: Settings, redis_url: str) -> None:
    import redis

    r = redis.Redis.from_url(redis_url)
    r.delete("train", "collect")
    r.rpush("train", "a", "b")
    r.rpush("train\x06\x163", "c")
    try:
        client = TestClient(create_app(Settings(**{**dash_settings.__dict__, "broker_url": redis_url})))
        depth = {dict(k)["queue"]: v for k, v in scrape(client)["brain_queue_depth"].items()}
        assert depth == {"collect": 0, "train": 3, "analysis": 0}
    finally:
        r.delete("train", "train\x06\x163")
