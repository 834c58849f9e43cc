"""The dashboard in a real headless Chromium: the overview sorts and filters, a symbol page draws its
charts without console errors, a run's progress updates itself while real workers run it, and
nothing is shown without credentials."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import pytest

from brain_tasks.dashboard import create_app
from brain_tasks.settings import Settings
from tests.dashboard.browser import chromium, screenshot, serve
from tests.dashboard.conftest import AUTH, N_EXTRA
from tests.test_report import BTC, ETH

USER, PASSWORD = AUTH.split(":", 1)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as b:
        yield b


@pytest.fixture
def base_url(dash_settings: Settings) -> Iterator[str]:
    with serve(create_app(dash_settings)) as url:
        yield url


@contextlib.contextmanager
def logged_in(browser: object) -> Iterator[tuple[object, list[str]]]:
    """A page with credentials, and the list its console errors and page errors are collected into."""
    context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD},
                                  viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page, errors
    finally:
        context.close()


def symbols_shown(page: object) -> list[str]:
    return page.locator("#overview tbody tr[data-symbol]").evaluate_all("rows => rows.map(r => r.dataset.symbol)")


def test_overview_sorts_and_filters(browser: object, base_url: str) -> None:
    with logged_in(browser) as (page, errors):
        page.goto(base_url + "/")
        assert len(symbols_shown(page)) == 50 and page.locator("#page-info").inner_text() == "page 1 of 2"
        page.click('th a[data-sort="sharpe"]')            # first click: best first
        page.wait_for_url(re.compile(r"sort=sharpe&order=desc"))
        assert symbols_shown(page)[:2] == [ETH, BTC]
        page.click('th a[data-sort="sharpe"]')            # second click: reversed
        page.wait_for_url(re.compile(r"sort=sharpe&order=asc"))
        assert symbols_shown(page)[:2] == [BTC, ETH]
        screenshot(page, "overview-sorted")
        page.fill("#filter-q", "X00")
        page.click("#filter-apply")
        page.wait_for_url(re.compile(r"q=X00"))
        shown = symbols_shown(page)
        assert len(shown) == 10 and all("X00" in s for s in shown)
        page.goto(base_url + "/?run_state=failed")
        assert symbols_shown(page) == ["SOL/USDT"]
        page.goto(base_url + "/")
        page.click("#next")
        page.wait_for_url(re.compile(r"page=2"))
        assert len(symbols_shown(page)) == 3 + N_EXTRA - 50
        screenshot(page, "overview-page-2")
        assert errors == []


def test_symbol_page_draws_its_charts_without_console_errors(browser: object, base_url: str) -> None:
    with logged_in(browser) as (page, errors):
        page.goto(f"{base_url}/symbols/{BTC}")
        page.wait_for_selector("body[data-charts-drawn=yes]", timeout=30_000)
        for chart in ("equity", "regime", "underwater", "sharpe", "importance", "drift"):
            box = page.locator(f"#chart-{chart}")
            assert "js-plotly-plot" in box.get_attribute("class"), chart
            assert box.locator("svg.main-svg").count() >= 1, chart
        # The equity chart carries the strategy and buy-and-hold, with the legend outside the plot area.
        traces = page.evaluate("document.getElementById('chart-equity').data.map(t => t.name)")
        assert traces == ["lightgbm v1 (out of sample)", "buy & hold"]
        assert page.evaluate("document.getElementById('chart-equity').layout.legend.y") >= 1
        assert page.locator("#events tr").count() == 3
        # A feature named like markup is drawn as text, not as markup.
        assert "<b>evil</b>" in page.locator("#chart-drift .xtick text").all_text_contents()
        # The newest signal's gates and the audit panel.
        assert "OUT of distribution" in page.locator("#signal-distribution").inner_text()
        assert "1.70" in page.locator("#signal-distribution").inner_text()
        assert "model age" in page.locator("#signal-model-age").inner_text()
        assert "1 differ" in page.locator("#audit-counts").inner_text()
        assert "close" in page.locator("#audit").inner_text()
        screenshot(page, "symbol")
        assert errors == []


def test_nothing_without_credentials(browser: object, base_url: str) -> None:
    """Chromium receives 401 and its challenge; with no credentials to offer it shows nothing of the Brain."""
    context = browser.new_context()
    try:
        page = context.new_page()
        statuses: dict[str, tuple[int, str]] = {}
        page.on("response", lambda r: statuses.__setitem__(r.url.removeprefix(base_url),
                                                           (r.status, r.headers.get("www-authenticate", ""))))
        for path in ("/", f"/symbols/{BTC}", "/runs", "/api/overview", "/metrics", "/openapi.json"):
            with contextlib.suppress(Exception):  # Chromium ends the navigation with ERR_INVALID_AUTH_CREDENTIALS
                page.goto(base_url + path)
            assert statuses[path][0] == 401 and statuses[path][1].startswith("Basic"), path
        page.wait_for_load_state()
        screenshot(page, "unauthorised")
    finally:
        context.close()


LIVE_SYMBOLS = ["ETH/BTC", "LTC/BTC"]
AS_OF = "2018-01-30"


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_run_progress_updates_itself_while_real_workers_run_it(browser: object, pg_url: str, redis_url: str,
                                                                tmp_path) -> None:  # noqa: ANN001
    """A worker on the analysis queue starts the run (its symbols pending: nobody serves the collect and
    train queues yet); the run page is opened; then a second worker does the work and the page, never
    reloaded, follows it to the end."""
    import re as _re

    from brain_tasks.brain.db import dispose_engine, make_engine
    from brain_tasks.brain.migrate import upgrade
    from celery import Celery

    from brain_tasks.service.steps.collect import ingest_freqtrade
    from brain_tasks.dashboard import data
    from tests import servers
    from tests.workers import REPO, brain_env, wait_for, worker

    db = servers.create_database(pg_url)
    broker = _re.sub(r"/\d+$", "/7", redis_url)
    try:
        upgrade(db)
        engine = make_engine(db)
        ingest_freqtrade(engine, REPO / "sample" / "freqtrade-testdata", symbols=LIVE_SYMBOLS, timeframe="5m",
                         exchange="freqtrade")
        settings = Settings(database_url=db, broker_url=broker, home=tmp_path / "home", dashboard_auth=AUTH)
        env = brain_env(db, broker, tmp_path / "home")
        with worker(env, name="starter", queues="analysis", log_dir=tmp_path), \
                serve(create_app(settings)) as base_url, logged_in(browser) as (page, errors):
            # An Engine's way in: the task's name and JSON arguments on the broker, nothing else.
            engine_app = Celery(broker=broker, backend=broker)
            engine_app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
            engine_app.send_task("brain_tasks.daily_retrain", queue="analysis",
                                 kwargs={"symbols": LIVE_SYMBOLS, "models": ["baseline"], "as_of": AS_OF})
            wait_for(lambda: data.runs_overview(engine)["runs"], timeout=120, what="the run's rows")
            run_id = data.runs_overview(engine)["runs"][0]["run_id"]
            page.goto(f"{base_url}/runs/{run_id}")
            assert page.locator("#progress-text").inner_text() == "0 of 2 symbols done"
            assert page.locator("#run").get_attribute("data-live") == "yes"
            page.evaluate("""() => {
                window.__sameDocument = true;
                window.__seen = [document.getElementById('progress-text').textContent];
                new MutationObserver(() => window.__seen.push(document.getElementById('progress-text').textContent))
                    .observe(document.getElementById('progress-text'), {childList: true, characterData: true,
                                                                         subtree: true});
            }""")
            listing = page.context.new_page()   # the runs page follows the same attempt in its row
            listing.goto(f"{base_url}/runs")
            row = f'#runs tr[data-run="{run_id}"]'
            assert listing.locator(f'{row} [data-field="progress"]').inner_text() == "0 of 2 done"
            with worker(env, name="doer", queues="collect,train", log_dir=tmp_path):
                page.wait_for_function("document.getElementById('run').dataset.live === 'no'", timeout=300_000)
                listing.wait_for_function(f"document.querySelector('{row}').dataset.live === 'no'", timeout=60_000)
            assert listing.locator(f'{row} [data-field="progress"]').inner_text() == "2 of 2 done"
            listing.close()
            assert page.evaluate("window.__sameDocument") is True, "the page updated in place, not by reloading"
            seen = page.evaluate("window.__seen")
            assert seen[0] == "0 of 2 symbols done" and seen[-1] == "2 of 2 symbols done", seen
            assert page.locator("#progress-bar").bounding_box()["width"] > 300, "the bar is full"
            states = page.locator('#symbols [data-field="state"]').all_inner_texts()
            assert sorted(states) == ["succeeded", "succeeded"], states
            screenshot(page, "run-finished")
            # The symbol page over what the real pipeline stored (comparison rows with flat and
            # buy-and-hold, real regimes and folds) draws too.
            page.goto(f"{base_url}/symbols/{LIVE_SYMBOLS[0]}")
            page.wait_for_selector("body[data-charts-drawn=yes]", timeout=30_000)
            assert page.locator("#chart-equity svg.main-svg").count() >= 1
            screenshot(page, "symbol-real-run")
            page.goto(f"{base_url}/")
            assert symbols_shown(page) == LIVE_SYMBOLS
            screenshot(page, "overview-real-run")
            assert errors == []
    finally:
        dispose_engine(db)
        servers.drop_database(db)


def test_replay_page_draws_curves_and_timeline(browser: object, base_url: str) -> None:
    """The pooled view draws every policy's equity; choosing a symbol in the selector reloads the page
    for it, with the brain policy's per-regime timeline and its promotion and rollback."""
    from tests.replay_rows import POLICIES, REPLAY_ID

    with logged_in(browser) as (page, errors):
        page.goto(f"{base_url}/replays")
        page.click(f'#replays a[href="/replays/{REPLAY_ID}"]')
        page.wait_for_selector("body[data-charts-drawn=yes]", timeout=30_000)
        equity = page.locator("#chart-replay-equity")
        assert "js-plotly-plot" in equity.get_attribute("class") and equity.locator("svg.main-svg").count() >= 1
        traces = page.evaluate("document.getElementById('chart-replay-equity').data.map(t => t.name)")
        assert traces == ["brain", "newest:lightgbm", "newest:xgboost", "best_composite", "buy_and_hold", "flat"]
        assert len(traces) == len(POLICIES) and page.locator("#chart-replay-timeline").count() == 0
        screenshot(page, "replay-pooled")
        page.select_option("#symbol-select", BTC)
        page.wait_for_url(re.compile(r"symbol=BTC%2FUSDT"))
        page.wait_for_selector("body[data-charts-drawn=yes]", timeout=30_000)
        timeline = page.locator("#chart-replay-timeline")
        assert timeline.locator("svg.main-svg").count() >= 1
        rows = page.evaluate("[...new Set(document.getElementById('chart-replay-timeline').data.flatMap(t => t.y))]")
        assert sorted(rows) == sorted(["low", "normal", "high", "extreme", "other bars"])
        notes = page.locator("#chart-replay-timeline .annotation-text").all_text_contents()
        assert notes == ["promote", "rollback"]
        assert page.evaluate("document.getElementById('chart-replay-equity').layout.shapes.length") == 2
        screenshot(page, "replay-symbol")
        assert errors == []
