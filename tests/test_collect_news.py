"""Sentiment into the Brain: file ingest and feed collection are idempotent on SQLite and PostgreSQL,
malformed / empty / stale feeds become data-quality findings, and nothing is stored twice."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from brain_tasks.brain import store
from brain_tasks.brain.db import make_engine
from brain_tasks.brain.findings import read_findings
from brain_tasks.service.feeds import collect_configured, collect_feed, ingest_news
from brain_tasks.errors import DataError
from brain_tasks.market.news import Http, RedditFeed, RssFeed, Tagger
from brain_tasks.market.sentiment import VaderScorer
from brain_tasks.settings import from_environ
from tests.newsserver import NEWS, Reply, news_server, standard_routes

NOW = pd.Timestamp("2024-01-10 17:10", tz="UTC")
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


@pytest.fixture(scope="module")
def scorer() -> VaderScorer:
    return VaderScorer()


def _rows(engine) -> pd.DataFrame:  # noqa: ANN001
    return store.read_table(engine, "sentiment_scores")


def test_ingesting_a_file_twice_leaves_the_same_rows(brain_db_url, scorer):
    engine = make_engine(brain_db_url)
    first = ingest_news(engine, NEWS / "items.jsonl", symbols=["ETH/USDT"], now=NOW, scorer=scorer)
    rows = _rows(engine)
    second = ingest_news(engine, NEWS / "items.jsonl", symbols=["ETH/USDT"], now=NOW, scorer=scorer)
    pd.testing.assert_frame_equal(_rows(engine), rows)
    assert first["stored"] == len(rows) > 0 and second["stored"] == 0
    # w-1 names BTC/USDT itself (so it joins the symbols); w-3 appears twice and w-4 is the same story.
    assert first["duplicates"] == 2 and first["rejected"] == 2
    got = {(r.symbol, r.ts.hour): r.n_items for r in rows.itertuples()}
    assert got == {("BTC/USDT", 10): 1, ("ETH/USDT", 10): 1, ("BTC/USDT", 11): 1, ("ETH/USDT", 12): 1}
    eth10 = rows[(rows.symbol == "ETH/USDT") & (rows.ts.dt.hour == 10)].iloc[0]
    assert eth10.score < -0.5 and eth10.source == "wire"  # "Exchange hacked, $30M in ether stolen"
    assert (rows["score"].abs() <= 1).all()
    findings = read_findings(engine, source="items", data_kind="news")
    assert findings["check"].tolist() == ["malformed_item"] and len(findings) == 1
    # What training reads: every source's rows of one symbol, in a window.
    btc = store.read_sentiment(engine, "BTC/USDT", start="2024-01-10T10:30:00Z", end="2024-01-10T12:00:00Z")
    assert list(btc.columns) == ["ts", "source", "score", "magnitude", "n_items"]
    assert btc["ts"].tolist() == [pd.Timestamp("2024-01-10 11:00", tz="UTC")] and btc["n_items"].tolist() == [1]


def test_a_file_with_nothing_readable_is_a_finding_and_stores_nothing(brain_db_url, tmp_path, scorer):
    engine = make_engine(brain_db_url)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{broken\n")
    for _ in range(2):
        with pytest.raises(DataError, match="no readable item"):
            ingest_news(engine, bad, symbols=SYMBOLS, now=NOW, scorer=scorer)
    assert _rows(engine).empty
    findings = read_findings(engine, source="bad", data_kind="news")
    assert findings["check"].tolist() == ["malformed"] and findings["severity"].tolist() == ["error"]


def _collect(engine, feed, scorer, now=NOW):  # noqa: ANN001
    return collect_feed(engine, feed, symbols=SYMBOLS, tagger=Tagger.for_symbols(SYMBOLS), scorer=scorer, now=now,
                        lookback=pd.Timedelta(hours=12))


def _http() -> Http:
    return Http(min_interval=0.0, sleep=lambda s: None)


def test_collecting_a_feed_twice_leaves_the_same_rows(brain_db_url, scorer):
    engine = make_engine(brain_db_url)
    with news_server(standard_routes()) as srv:
        feed = RssFeed("desk", srv.url("/news/desk-page1.xml"), http=_http())
        first = _collect(engine, feed, scorer)
        rows = _rows(engine)
        again = _collect(engine, feed, scorer)
        # An hour later: resumes after the last stored hour; the 17:00 hour has no items.
        later = _collect(engine, feed, scorer, now=NOW + pd.Timedelta(hours=1))
    pd.testing.assert_frame_equal(_rows(engine), rows)
    assert first["pages"] == 2 and first["duplicates"] == 1  # the syndicated copy of the ETF story
    assert first["since"] == "2024-01-10T05:00:00+00:00" and again["since"] == "2024-01-10T17:00:00+00:00"
    assert again["stored"] == 0 and later["stored"] == 0
    # Hours 10..16 are complete at 17:10; 17:00 is not, 09:00 and before lie outside the window.
    assert rows["ts"].min() == pd.Timestamp("2024-01-10 10:00", tz="UTC")
    assert rows["ts"].max() == pd.Timestamp("2024-01-10 16:00", tz="UTC")
    btc16 = rows[(rows.symbol == "BTC/USDT") & (rows.ts.dt.hour == 16)].iloc[0]
    assert btc16.n_items == 2 and btc16.score > 0.5  # SEC approval + "to the moon"
    sol13 = rows[(rows.symbol == "SOL/USDT")]
    assert sol13["ts"].dt.hour.tolist() == [13] and sol13["score"].iloc[0] < 0  # network halts
    assert read_findings(engine, source="desk", resolved=False).empty


def test_a_malformed_feed_is_a_finding_and_nothing_is_stored_twice(brain_db_url, scorer):
    engine = make_engine(brain_db_url)
    routes = standard_routes()
    routes["/news/flaky.xml"] = [Reply(200, (NEWS / "desk-broken.xml").read_bytes()),
                                 Reply(200, (NEWS / "desk-broken.xml").read_bytes()),
                                 Reply(200, (NEWS / "desk-page1.xml").read_bytes())]
    with news_server(routes) as srv:
        feed = RssFeed("flaky", srv.url("/news/flaky.xml"), http=_http(), max_pages=1)
        for _ in range(2):
            with pytest.raises(DataError, match="not well-formed"):
                _collect(engine, feed, scorer)
            assert _rows(engine).empty
        findings = read_findings(engine, source="flaky", data_kind="news")
        assert findings["check"].tolist() == ["malformed"] and not findings["resolved"].iloc[0]
        healthy = _collect(engine, feed, scorer)  # the feed is fixed: the finding is resolved
        stored = _rows(engine)
        assert healthy["stored"] == len(stored) > 0
        assert _collect(engine, feed, scorer)["stored"] == 0
    findings = read_findings(engine, source="flaky", data_kind="news")
    assert findings.set_index("check").loc["malformed", "resolved"]
    assert (stored.groupby(["source", "symbol", "ts"]).size() == 1).all()


def test_malformed_reddit_json_and_an_empty_or_stale_feed_are_findings(brain_db_url, scorer):
    engine = make_engine(brain_db_url)
    routes = standard_routes()
    routes["/news/empty.xml"] = Reply(200, b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
                                           b"</channel></rss>")
    with news_server(routes) as srv:
        with pytest.raises(DataError, match="not a Reddit listing"):
            _collect(engine, RedditFeed("reddit/r/Broken", srv.url("/r/Broken/new.json"), http=_http()), scorer)
        empty = _collect(engine, RssFeed("empty", srv.url("/news/empty.xml"), http=_http()), scorer)
        stale = _collect(engine, RssFeed("desk", srv.url("/news/desk-page1.xml"), http=_http()), scorer,
                         now=NOW + pd.Timedelta(days=3))
    assert empty["findings"] == {"empty": 1}
    assert stale["findings"]["stale"] == 1 and stale["stored"] == 0  # everything is before the 12-hour window
    checks = read_findings(engine, data_kind="news").set_index("source")["check"].to_dict()
    assert checks == {"reddit/r/Broken": "malformed", "empty": "empty", "desk": "stale"}


def test_reddit_collection_pages_and_leaves_out_an_incomplete_oldest_hour(brain_db_url, scorer):
    engine = make_engine(brain_db_url)
    with news_server(standard_routes()) as srv:
        out = _collect(engine, RedditFeed("reddit/r/Bitcoin", srv.url("/r/Bitcoin/new.json"), http=_http()), scorer)
    rows = _rows(engine)
    assert out["pages"] == 2 and out["duplicates"] == 1 and out["rejected"] == 1  # a double post at 16:20/16:55
    # The listing ended without reaching the window's start: its oldest hour (11:00) may be incomplete
    # and is left out; the re-post of its story (16:20, posted again at 16:55) counts once, in its own hour.
    assert out["findings"] == {"malformed_item": 1, "truncated": 1}
    assert rows["ts"].dt.hour.tolist() == [12, 13, 15, 16]
    assert rows.set_index(rows["ts"].dt.hour).loc[16, "n_items"] == 1


def test_configured_feeds_one_bad_feed_does_not_stop_the_others(sqlite_url, scorer):
    from brain_tasks.brain.migrate import upgrade

    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    with news_server(standard_routes()) as srv:
        settings = from_environ({
            "BRAIN_SYMBOLS": ",".join(SYMBOLS), "BRAIN_NEWS_MIN_INTERVAL": "0", "BRAIN_NEWS_LOOKBACK_HOURS": "12",
            "BRAIN_NEWS_FEEDS": f"desk=rss:{srv.url('/news/desk-page1.xml')},"
                                f"broken=rss:{srv.url('/news/desk-broken.xml')},"
                                f"reddit:{srv.url('/r/Bitcoin/new.json')}"})
        out = collect_configured(engine, settings, now=NOW, scorer=scorer)
    assert sorted(out["feeds"]) == ["desk", "reddit/r/Bitcoin"] and list(out["failed"]) == ["broken"]
    assert out["stored"] == len(_rows(engine))


def test_cli_ingest_news(tmp_path, monkeypatch):
    from brain_tasks import cli, settings

    db = f"sqlite:///{tmp_path / 'brain.db'}"
    monkeypatch.setattr(settings, "get_settings", lambda: from_environ({"BRAIN_DATABASE_URL": db}))
    monkeypatch.setattr(cli, "get_settings", lambda: from_environ({"BRAIN_DATABASE_URL": db}))
    runner = CliRunner()
    ok = runner.invoke(cli.main, ["ingest", "--source", "news", "--json", "--path", str(NEWS / "items.csv"),
                                  "--symbols", "ETH/USDT"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["stored"] == 3  # BTC/USDT at 10:00 (named) and 11:00, ETH/USDT at 10:00
    bad = tmp_path / "bad.jsonl"
    bad.write_text("nope\n")
    refused = runner.invoke(cli.main, ["ingest", "--source", "news", "--path", str(bad)])
    assert refused.exit_code == 2 and "no readable item" in refused.output


def test_beat_collects_sentiment_hourly_only_when_feeds_are_configured():
    from brain_tasks.schedule import beat_schedule

    entry = beat_schedule(from_environ({"BRAIN_NEWS_FEEDS": "reddit:Bitcoin"}))["collect-sentiment"]
    assert entry["task"] == "brain_tasks.collect_sentiment" and entry["schedule"].hour == set(range(24))
    assert "collect-sentiment" not in beat_schedule(from_environ({}))
