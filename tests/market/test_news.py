"""News sources and scoring: hand-checked headlines, tagging, de-duplication, feed parsing, paging,
rate limits and retries against a local HTTP server serving tests/data/news."""

from __future__ import annotations

import pandas as pd
import pytest

from brain_tasks.errors import TransientError
from brain_tasks.market.frames import Malformed
from brain_tasks.market.news import (
    FeedRejected,
    Http,
    RedditFeed,
    RssFeed,
    Tagger,
    dedupe,
    parse_feed,
    parse_feed_spec,
    parse_feeds,
    parse_keywords,
    read_items_file,
)
from brain_tasks.market.sentiment import VaderScorer, aggregate_hourly, score_items
from tests.newsserver import NEWS, Reply, fixture, news_server, standard_routes

T = pd.Timestamp


@pytest.fixture(scope="module")
def scorer() -> VaderScorer:
    return VaderScorer()


# Hand-checked: each group's sign, and the order within it (strongest first).
POSITIVE = [
    "Bitcoin ETF approval sends BTC to the moon",              # the crypto phrases carry it
    "Ether rallies to two-year high on ETF hopes",
    "BTC adoption grows as retailers accept bitcoin",
]
NEUTRAL = ["Bitcoin miners meet in Austin on Tuesday", "Ethereum developers publish the upgrade schedule"]
NEGATIVE = [
    "DeFi protocol hacked, $100 million drained in rug pull",  # hack + drained + rug pull
    "Traders rekt as Bitcoin plunges 15% overnight",
    "Bitcoin ETF rejected by the SEC",
]


def test_hand_checked_headlines_have_the_right_sign(scorer):
    for h in POSITIVE:
        assert scorer.score_one(h) > 0.3, h
    for h in NEUTRAL:
        assert abs(scorer.score_one(h)) < 0.2, h
    for h in NEGATIVE:
        assert scorer.score_one(h) < -0.3, h


def test_hand_checked_headlines_are_ordered(scorer):
    pos = [scorer.score_one(h) for h in POSITIVE]
    neg = [scorer.score_one(h) for h in NEGATIVE]
    assert pos == sorted(pos, reverse=True)
    assert neg == sorted(neg)
    assert min(pos) > max(scorer.score_one(h) for h in NEUTRAL) > max(neg)


def test_the_crypto_lexicon_changes_what_plain_vader_misses(scorer):
    plain = VaderScorer(lexicon={}, phrases={})
    for text in ("rekt", "rug pull", "to the moon", "ETF approval"):
        assert abs(scorer.score_one(text)) > abs(plain.score_one(text)) + 0.1, text
    assert scorer.score_one("rekt") < 0 < scorer.score_one("ETF approval")


def test_tagging_by_ticker_name_and_cashtag():
    tagger = Tagger.for_symbols(["BTC/USDT:USDT", "ETH/BTC", "LINK/USDT"], parse_keywords(["PEPE=pepe coin"]))
    assert tagger.tag("Bitcoin hits a record") == ("BTC",)
    assert tagger.tag("ETH and $btc rally") == ("BTC", "ETH")
    assert tagger.tag("Ether slides; Chainlink steady") == ("ETH", "LINK")
    assert tagger.tag("the missing link in eth zurich research") == ()  # lower-case tickers are words
    assert tagger.tag("Pepe Coin soars") == ("PEPE",)
    classic = Tagger.for_symbols(["ETH/USDT", "ETC/USDT"])
    assert classic.tag("Ethereum Classic hit by 51% attack") == ("ETC",)  # the longest name wins
    assert classic.tag("Ethereum Classic and Ethereum diverge") == ("ETC", "ETH")


def test_duplicates_by_id_and_by_normalised_title_within_the_hour_keep_the_earliest():
    items = pd.DataFrame({"ts": pd.to_datetime(["2024-01-10 11:00", "2024-01-10 10:00", "2024-01-10 10:30",
                                                "2024-01-10 10:45", "2024-01-10 13:10"], utc=True),
                          "source": ["a", "a", "a", "b", "a"], "item_id": ["1", "1", "2", "3", "4"],
                          "title": ["Bitcoin rallies", "Bitcoin rallies", "BITCOIN  rallies!", "Bitcoin rallies",
                                    "Bitcoin rallies"], "text": [""] * 5, "symbols": [()] * 5})
    out, dropped = dedupe(items)
    assert dropped == 2  # the same id again; the same title in the same hour
    # Another source's copy, and a re-post hours later, count.
    assert out[["source", "item_id"]].values.tolist() == [["a", "1"], ["b", "3"], ["a", "4"]]
    assert out["ts"].iloc[0] == T("2024-01-10 10:00", tz="UTC")


def test_items_file_reads_jsonl_and_csv_and_reports_bad_lines():
    jl = read_items_file(NEWS / "items.jsonl")
    assert jl.rejected == 2 and [f.check for f in jl.findings] == ["malformed_item"]
    assert jl.items["symbols"].iloc[0] == ("BTC/USDT",) and jl.items["symbols"].iloc[1] == ("ETH",)
    csv = read_items_file(NEWS / "items.csv")
    assert csv.items["item_id"].tolist() == ["w-1", "w-2", "w-3"]
    assert csv.items["ts"].iloc[1] == T("2024-01-10 10:40", tz="UTC")


def test_a_file_with_nothing_readable_is_malformed(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n{\"title\": \"no time\"}\n")
    with pytest.raises(Malformed, match="no readable item"):
        read_items_file(bad)


def test_malformed_xml_is_refused_not_guessed():
    # feedparser's lenient parser would recover the first item; a guess is not data.
    with pytest.raises(Malformed, match="not well-formed"):
        parse_feed((NEWS / "desk-broken.xml").read_bytes(), "desk")
    with pytest.raises(Malformed, match="not an RSS or Atom feed"):
        parse_feed(b"<html><body>Service unavailable</body></html>", "desk")


def test_atom_entries_with_time_zones_and_an_undated_entry():
    items, nxt, findings, bad = parse_feed((NEWS / "atom.xml").read_bytes(), "blog")
    assert nxt is None and bad == 1 and findings[0].check == "malformed_item"
    assert items["ts"].tolist() == [T("2024-01-10 14:20", tz="UTC"), T("2024-01-10 12:05", tz="UTC")]  # +01:00


def _http(waits: list[float] | None = None, **kw) -> Http:
    return Http(min_interval=0.0, sleep=(waits.append if waits is not None else (lambda s: None)), **kw)


def test_rss_pages_back_to_since_and_stops_there():
    with news_server(standard_routes()) as srv:
        feed = RssFeed("desk", srv.url("/news/desk-page1.xml"), http=_http())
        recent = feed.fetch(since=T("2024-01-10 14:00", tz="UTC"))
        assert recent.pages == 1 and recent.reached_since and len(recent.items) == 5
        full = feed.fetch(since=T("2024-01-10 00:00", tz="UTC"))
    assert full.pages == 2 and full.reached_since and len(full.items) == 10
    assert srv.hits == ["/news/desk-page1.xml", "/news/desk-page1.xml", "/news/desk-page2.xml"]


def test_reddit_follows_after_and_reports_unreadable_posts():
    with news_server(standard_routes()) as srv:
        feed = RedditFeed("r/Bitcoin", srv.url("/r/Bitcoin/new.json"), http=_http())
        got = feed.fetch(since=T("2024-01-01", tz="UTC"))
    assert got.pages == 2 and not got.reached_since  # the listing ended before reaching since
    assert len(got.items) == 7 and got.rejected == 1
    assert "after=t3_18ugc03" in srv.hits[1] and "limit=100" in srv.hits[0]


def test_transient_faults_are_retried_with_the_servers_pause_and_refusals_are_not():
    routes = standard_routes()
    routes["/news/desk-page1.xml"] = [Reply(503), Reply(429, headers={"Retry-After": "7"}),
                                      fixture("desk-page1.xml")]
    routes["/always-503"] = Reply(503)
    waits: list[float] = []
    with news_server(routes) as srv:
        got = RssFeed("desk", srv.url("/news/desk-page1.xml"), http=_http(waits, max_backoff=30)).fetch(
            since=T("2024-01-10 14:00", tz="UTC"))
        assert len(got.items) == 5 and len(waits) == 2 and waits[1] >= 7  # Retry-After honoured
        with pytest.raises(FeedRejected, match="404"):
            RssFeed("x", srv.url("/news/missing.xml"), http=_http()).fetch()
        assert srv.hits.count("/news/missing.xml") == 1  # a refusal is not retried
        with pytest.raises(TransientError, match="3 attempts"):
            _http(max_retries=2).get(srv.url("/always-503"))
        assert srv.hits.count("/always-503") == 3


def test_an_exhausted_reddit_quota_waits_for_the_reset():
    quota = {"X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": "42"}
    routes = standard_routes()
    routes["/r/Bitcoin/new.json"] = fixture("reddit-page1.json", **quota)
    waits: list[float] = []
    clock = iter(range(1000))
    with news_server(routes) as srv:
        http = Http(min_interval=0.0, sleep=waits.append, clock=lambda: float(next(clock)))
        RedditFeed("r/Bitcoin", srv.url("/r/Bitcoin/new.json"), http=http).fetch(since=T("2024-01-01", tz="UTC"))
    assert len(waits) == 1 and 40 <= waits[0] <= 42


def test_aggregation_by_hour_and_symbol_hand_computed(scorer):
    items = pd.DataFrame({"ts": pd.to_datetime(["2024-01-10 10:05", "2024-01-10 10:40", "2024-01-10 11:15"],
                                               utc=True),
                          "source": ["wire"] * 3, "item_id": ["1", "2", "3"],
                          "title": ["a", "b", "c"], "text": [""] * 3, "symbols": [()] * 3,
                          "assets": [("BTC",), ("BTC", "ETH"), ("ETH",)]})
    scored = items.assign(score=[0.5, -0.25, 0.75])
    rows = aggregate_hourly(scored, ["BTC/USDT", "ETH/USDT", "BTC/USDT:USDT"])
    got = {(r.symbol, r.ts.hour): (r.score, r.magnitude, r.n_items) for r in rows.itertuples()}
    assert got == {("BTC/USDT", 10): (0.125, 0.375, 2), ("BTC/USDT:USDT", 10): (0.125, 0.375, 2),
                   ("ETH/USDT", 10): (-0.25, 0.25, 1), ("ETH/USDT", 11): (0.75, 0.75, 1)}
    assert len(score_items(items, scorer)) == 3


def test_feed_specs():
    assert parse_feed_spec("desk=rss:https://news.example.com/rss").name == "desk"
    assert parse_feed_spec("rss:https://news.example.com/rss").name == "news.example.com"
    assert parse_feed_spec("reddit:Bitcoin").name == "reddit/r/Bitcoin"
    assert parse_feed_spec("reddit:http://127.0.0.1:9/r/Bitcoin/new.json").name == "reddit/r/Bitcoin"
    for bad in ("ftp:thing", "rss:not-a-url", "x=reddit:"):
        with pytest.raises(ValueError):
            parse_feed_spec(bad)
    with pytest.raises(ValueError, match="unique"):
        parse_feeds(["a=reddit:Bitcoin", "a=reddit:ethereum"])
