"""News and social text sources: RSS/Atom feeds, Reddit's public JSON listings and files of items.

Every source hands over a `Fetched` batch: an item frame (``ITEM_COLUMNS``) and the data-quality
findings of the fetch (kind ``news``).  A document that cannot be read at all raises `Malformed`
(nothing of it is used); single unreadable entries are left out and reported.  Network sources walk
pages backwards in time until they reach ``since`` (Atom/RSS ``rel="next"`` links, RFC 5005; Reddit's
``after`` cursor), keep a minimum interval between requests, honour ``Retry-After`` and Reddit's
``X-Ratelimit-*`` headers, and retry only transient faults (connection errors, timeouts, 429, 5xx)
with exponential backoff and full jitter, as the ccxt adapter does.  Pure apart from the HTTP edge.
"""

from __future__ import annotations

import calendar
import csv
import hashlib
import html
import io
import json
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import feedparser
import pandas as pd
import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from brain_tasks.errors import DataError, TransientError
from brain_tasks.market.frames import BadRequest, Malformed
from brain_tasks.timekeeping import parse_utc
from brain_tasks.market.quality import Finding

ITEM_COLUMNS = ("ts", "source", "item_id", "title", "text", "symbols")
DATA_KIND = "news"
DEFAULT_USER_AGENT = "brain-tasks/0.1 (news sentiment collector)"

# Common names of the largest assets; any other asset is found by its ticker alone (see `Tagger`).
DEFAULT_KEYWORDS: dict[str, tuple[str, ...]] = {
    "BTC": ("bitcoin", "xbt"),
    "ETH": ("ethereum", "ether"),
    "SOL": ("solana",),
    "XRP": ("ripple",),
    "ADA": ("cardano",),
    "DOGE": ("dogecoin",),
    "LTC": ("litecoin",),
    "TRX": ("tron",),
    "DOT": ("polkadot",),
    "AVAX": ("avalanche",),
    "LINK": ("chainlink",),
    "BNB": ("binance coin",),
    "XMR": ("monero",),
    "ZEC": ("zcash",),
    "ETC": ("ethereum classic",),
    "XLM": ("stellar",),
    "DASH": (),
}


class FeedRejected(DataError):
    """The server refused the request for a reason a retry cannot fix (404, 403, bad URL)."""

    check = "rejected"


class _Throttled(Exception):
    """A transient HTTP answer (429 / 5xx); ``retry_after`` is the server's requested pause, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Fetched:
    """One source's batch: items (``ITEM_COLUMNS``), findings, pages read, and whether the walk reached
    back to the requested ``since`` (when not, the oldest hour may be incomplete)."""

    source: str
    items: pd.DataFrame
    findings: list[Finding] = field(default_factory=list)
    pages: int = 0
    reached_since: bool = True
    rejected: int = 0


@runtime_checkable
class NewsFeed(Protocol):
    """What collection needs from a network source: the ``name`` stored as ``source``, and a fetch of
    the items published since a time (pages walked back to it where the source pages)."""

    name: str
    kind: str

    def fetch(self, since: Any = None) -> Fetched: ...


def empty_items() -> pd.DataFrame:
    """An item frame with no rows and the right dtypes."""
    return pd.DataFrame({"ts": pd.Series([], dtype="datetime64[ns, UTC]"), "source": pd.Series([], dtype=object),
                         "item_id": pd.Series([], dtype=object), "title": pd.Series([], dtype=object),
                         "text": pd.Series([], dtype=object), "symbols": pd.Series([], dtype=object)})


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    if not rows:
        return empty_items()
    df = pd.DataFrame(rows, columns=list(ITEM_COLUMNS))
    df["ts"] = pd.to_datetime(df["ts"], utc=True).astype("datetime64[ns, UTC]")
    return df


# --- text helpers --------------------------------------------------------------------------------

_TAG = re.compile(r"<[^>]+>")
_NON_WORD = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")


def plain_text(value: Any) -> str:
    """HTML fragments as plain text: tags dropped, entities decoded, whitespace collapsed."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", str(value)))).strip()


def normalise_title(title: str) -> str:
    """The title as compared for duplicates: NFKC, lower case, punctuation and extra spaces removed."""
    text = unicodedata.normalize("NFKC", plain_text(title)).casefold()
    return _SPACE.sub(" ", _NON_WORD.sub(" ", text)).strip()


def dedupe(items: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Items unique by (source, item_id), and by (source, hour, normalised title); the earliest copy is
    kept.  Returns (items, number dropped).

    Titles are compared within an hour only: a syndicated copy or a double post is one item, a re-post
    hours later counts again (renewed attention).  That keeps every hourly row a function of that
    hour's items alone, whatever window or pages a collection happened to read.
    """
    if items.empty:
        return items, 0
    df = items.sort_values(["ts", "item_id"], kind="stable")
    df = df[~df.duplicated(["source", "item_id"])]
    same_story = pd.DataFrame({"s": df["source"], "h": df["ts"].dt.floor("h"), "k": df["title"].map(normalise_title)})
    out = df[~same_story.duplicated()].reset_index(drop=True)
    return out, int(len(items) - len(out))


# --- symbol tagging ------------------------------------------------------------------------------

def base_asset(symbol: str) -> str:
    """'ETH/BTC' -> 'ETH', 'BTC/USDT:USDT' -> 'BTC', 'btc' -> 'BTC'."""
    return symbol.split("/", 1)[0].strip().upper()


def parse_keywords(entries: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``["BTC=bitcoin|satoshi", "PEPE=pepe coin"]`` -> ``{"BTC": ("bitcoin", "satoshi"), ...}``."""
    out: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        asset, sep, words = entry.partition("=")
        if not sep or not asset.strip():
            raise BadRequest(f"keyword entry {entry!r}: expected ASSET=word|word", check="bad_keywords")
        out[asset.strip().upper()] = tuple(w.strip() for w in words.split("|") if w.strip())
    return out


_TOKEN = re.compile(r"\$?\w+")


class Tagger:
    """Finds which assets a text is about.

    Each asset matches its ticker as a whole upper-case word or a cashtag (``BTC``, ``$btc``; a ticker
    in lower case is too often an ordinary word: "link", "dot", "sol") and each of its keywords as
    whole words in any case ("bitcoin", "Ether", "binance coin").  The longest keyword wins, so
    "Ethereum Classic" is ETC and not also ETH.  Text is split into words once and looked up in
    dictionaries: about ten thousand items a second here, with 200 assets as with 2.
    """

    def __init__(self, keywords: Mapping[str, Iterable[str]]) -> None:
        self._codes = {asset.upper(): asset.upper() for asset in keywords}
        self._names: dict[tuple[str, ...], str] = {}
        for asset, words in keywords.items():
            for word in words:
                key = tuple(t.casefold() for t in _TOKEN.findall(word))
                if key:
                    self._names[key] = asset.upper()
        self._longest = max((len(k) for k in self._names), default=0)
        self.assets = tuple(sorted(self._codes))

    @classmethod
    def for_symbols(cls, symbols: Iterable[str], extra: Mapping[str, Iterable[str]] | None = None) -> Tagger:
        """A tagger for the base assets of ``symbols`` (default names included) plus ``extra`` assets."""
        keywords: dict[str, list[str]] = {}
        for symbol in symbols:
            asset = base_asset(symbol)
            keywords.setdefault(asset, list(DEFAULT_KEYWORDS.get(asset, ())))
        for asset, words in (extra or {}).items():
            keywords.setdefault(asset.upper(), list(DEFAULT_KEYWORDS.get(asset.upper(), ()))).extend(words)
        return cls(keywords)

    def tag(self, text: str) -> tuple[str, ...]:
        """The assets ``text`` mentions, sorted."""
        tokens = _TOKEN.findall(text)
        folded = [t.casefold() for t in tokens]
        found: set[str] = set()
        i = 0
        while i < len(tokens):
            for n in range(min(self._longest, len(tokens) - i), 0, -1):
                asset = self._names.get(tuple(folded[i:i + n]))
                if asset is not None:
                    found.add(asset)
                    i += n
                    break
            else:
                token = tokens[i]
                code = token[1:].upper() if token.startswith("$") else token
                if code in self._codes:
                    found.add(code)
                i += 1
        return tuple(sorted(found))

    def tag_items(self, items: pd.DataFrame) -> pd.DataFrame:
        """``items`` with an ``assets`` column: the symbols an item names itself (their base assets),
        else the assets found in its title and text."""
        assets = []
        for title, text, given in zip(items["title"], items["text"], items["symbols"], strict=True):
            if given:
                assets.append(tuple(sorted({base_asset(s) for s in given})))
            else:
                assets.append(self.tag(f"{plain_text(title)} {plain_text(text)}"))
        return items.assign(assets=pd.Series(assets, index=items.index, dtype=object))


# --- HTTP ----------------------------------------------------------------------------------------

_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
# A body cut off in transfer is a network fault too, unlike a complete body that does not parse.
_TRANSIENT_ERRORS = (_Throttled, requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


@dataclass
class Response:
    url: str
    status: int
    headers: Mapping[str, str]
    content: bytes


class Http:
    """GET with a minimum interval between requests, the server's rate-limit headers honoured, and
    retries (tenacity, exponential backoff with full jitter) of transient faults only."""

    def __init__(self, *, user_agent: str = DEFAULT_USER_AGENT, timeout: float = 20.0, max_retries: int = 4,
                 backoff: float = 0.5, max_backoff: float = 60.0, min_interval: float = 1.0,
                 session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = user_agent
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_backoff = max_backoff
        self.min_interval = min_interval
        self.sleep = sleep
        self.clock = clock
        self._next_at = 0.0
        self.requests = 0
        backoff_wait = wait_random_exponential(multiplier=backoff, max=max_backoff)

        def wait(state: Any) -> float:
            exc = state.outcome.exception() if state.outcome else None
            asked = getattr(exc, "retry_after", None) or 0.0
            return min(max(backoff_wait(state), asked), max_backoff)

        self._retrying = Retrying(retry=retry_if_exception_type(_TRANSIENT_ERRORS),
                                  wait=wait, stop=stop_after_attempt(max_retries + 1), sleep=sleep, reraise=True)

    def get(self, url: str, params: Mapping[str, Any] | None = None) -> Response:
        """The body of ``url``; `TransientError` once retries are exhausted, `FeedRejected` for a refusal."""
        try:
            return self._retrying(self._get_once, url, params)
        except _TRANSIENT_ERRORS as exc:
            raise TransientError(f"GET {url} failed after {self.max_retries + 1} attempts: {exc}") from exc
        except requests.RequestException as exc:  # invalid URL, too many redirects, ...
            raise FeedRejected(f"GET {url}: {exc}") from exc

    def _get_once(self, url: str, params: Mapping[str, Any] | None) -> Response:
        pause = self._next_at - self.clock()
        if pause > 0:
            self.sleep(pause)
        self.requests += 1
        try:
            r = self.session.get(url, params=params, timeout=self.timeout)
        finally:
            self._next_at = self.clock() + self.min_interval
        self._respect_quota(r.headers)
        if r.status_code in _TRANSIENT_STATUS:
            raise _Throttled(f"HTTP {r.status_code} from {r.url}", _seconds(r.headers.get("Retry-After")))
        if r.status_code >= 400:
            raise FeedRejected(f"HTTP {r.status_code} from {r.url}")
        return Response(r.url, r.status_code, dict(r.headers), r.content)

    def _respect_quota(self, headers: Mapping[str, str]) -> None:
        # Reddit: requests left in the window and seconds until it resets; spend none past zero.
        remaining, reset = _seconds(headers.get("X-Ratelimit-Remaining")), _seconds(headers.get("X-Ratelimit-Reset"))
        if remaining is not None and reset is not None and remaining < 1:
            self._next_at = max(self._next_at, self.clock() + min(reset, 600.0))


def _seconds(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None  # an HTTP-date Retry-After: the exponential backoff applies instead


# --- RSS / Atom ----------------------------------------------------------------------------------

# feedparser flags these and still parses the document with its strict parser: not a defect of the data.
_BENIGN_BOZO = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)


def _entry_time(entry: Mapping[str, Any]) -> pd.Timestamp | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        parsed = entry.get(key)
        if parsed:
            return pd.Timestamp(calendar.timegm(parsed), unit="s", tz="UTC")
    return None


def parse_feed(content: bytes, source: str, *, url: str = "") -> tuple[pd.DataFrame, str | None, list[Finding],
                                                                        int]:
    """Items of one RSS/Atom document, its ``rel="next"`` page link, findings, and entries left out.

    A document that is not well-formed raises `Malformed`: feedparser's lenient parser would recover a
    guess of its entries, and a guess is not data.
    """
    parsed = feedparser.parse(content)
    exc = parsed.get("bozo_exception")
    if parsed.get("bozo") and not isinstance(exc, _BENIGN_BOZO):
        raise Malformed(f"{source}: the feed at {url or '?'} is not well-formed XML: {exc}")
    if not parsed.get("version") and not parsed.entries:
        raise Malformed(f"{source}: the document at {url or '?'} is not an RSS or Atom feed")
    rows, bad = [], []
    for entry in parsed.entries:
        ts = _entry_time(entry)
        title = plain_text(entry.get("title"))
        ident = entry.get("id") or entry.get("link") or ""
        if ts is None or not title:
            reason = "no date" if ts is None else "no title"
            bad.append({"id": str(ident)[:200], "title": title[:200], "reason": reason})
            continue
        ident = ident or "title:" + hashlib.sha256(normalise_title(title).encode()).hexdigest()[:32]
        text = entry.get("summary") or ""
        rows.append({"ts": ts, "source": source, "item_id": str(ident), "title": title, "text": plain_text(text),
                     "symbols": ()})
    findings = []
    if bad:
        findings.append(Finding(DATA_KIND, "malformed_item", "warning", _first_ts(rows), None,
                                {"message": f"{len(bad)} entries without a date or a title left out",
                                 "rows": len(bad), "examples": bad[:5], "url": url}))
    nxt = next((link.get("href") for link in parsed.feed.get("links", []) if link.get("rel") == "next"), None)
    return _frame(rows), (urljoin(url, nxt) if nxt else None), findings, len(bad)


def _first_ts(rows: list[dict[str, Any]]) -> pd.Timestamp:
    return min((r["ts"] for r in rows), default=pd.Timestamp("1970-01-01", tz="UTC"))


class RssFeed:
    """An RSS or Atom feed; paged feeds (``rel="next"``) are followed back to ``since``."""

    kind = "rss"

    def __init__(self, name: str, url: str, *, http: Http | None = None, max_pages: int = 20) -> None:
        self.name, self.url, self.http, self.max_pages = name, url, http or Http(), max_pages

    def fetch(self, since: Any = None) -> Fetched:
        since = parse_utc(since)
        url: str | None = self.url
        seen: set[str] = set()
        parts, findings, rejected, pages = [], [], 0, 0
        reached = False
        while url and url not in seen and pages < self.max_pages:
            seen.add(url)
            r = self.http.get(url)
            items, url, found, bad = parse_feed(r.content, self.name, url=r.url)
            pages += 1
            parts.append(items)
            findings += found
            rejected += bad
            if items.empty:
                break
            if since is not None and items["ts"].min() < since:
                reached = True
                break
        return _fetched(self.name, parts, findings, pages, reached, rejected)


def _fetched(name: str, parts: list[pd.DataFrame], findings: list[Finding], pages: int, reached: bool,
             rejected: int) -> Fetched:
    parts = [p for p in parts if len(p)]
    items = pd.concat(parts, ignore_index=True) if parts else empty_items()
    return Fetched(name, items, findings, pages, reached, rejected)


# --- Reddit --------------------------------------------------------------------------------------

REDDIT = "https://www.reddit.com"


def parse_reddit(content: bytes, source: str, *, url: str = "") -> tuple[pd.DataFrame, str | None, list[Finding],
                                                                          int]:
    """Items of one Reddit listing page (``/r/NAME/new.json``), its ``after`` cursor, findings, rejects."""
    try:
        payload = json.loads(content)
        data = payload["data"]
        children = data["children"]
        if payload.get("kind") != "Listing" or not isinstance(children, list):
            raise TypeError("not a Listing")
    except (ValueError, KeyError, TypeError) as exc:
        raise Malformed(f"{source}: the response at {url or '?'} is not a Reddit listing: {exc!r}") from exc
    rows, bad = [], []
    for child in children:
        post = child.get("data") if isinstance(child, dict) else None
        try:
            ts = pd.Timestamp(float(post["created_utc"]), unit="s", tz="UTC")
            title = plain_text(post["title"])
            ident = str(post.get("name") or post["id"])
            if not title:
                raise ValueError("empty title")
        except (TypeError, KeyError, ValueError) as exc:
            bad.append({"item": str(child)[:200], "reason": repr(exc)[:100]})
            continue
        rows.append({"ts": ts, "source": source, "item_id": ident, "title": title,
                     "text": plain_text(post.get("selftext")), "symbols": ()})
    findings = []
    if bad:
        findings.append(Finding(DATA_KIND, "malformed_item", "warning", _first_ts(rows), None,
                                {"message": f"{len(bad)} posts without a time, id or title left out",
                                 "rows": len(bad), "examples": bad[:5], "url": url}))
    after = data.get("after")
    return _frame(rows), (str(after) if after else None), findings, len(bad)


def reddit_url(target: str) -> str:
    """A subreddit name ('Bitcoin', 'r/Bitcoin') or a listing URL, as the listing URL."""
    if target.startswith(("http://", "https://")):
        return target
    name = target.removeprefix("/").removeprefix("r/")
    if not re.fullmatch(r"[A-Za-z0-9_]{2,21}", name):
        raise BadRequest(f"not a subreddit name: {target!r}", check="bad_feed")
    return f"{REDDIT}/r/{name}/new.json"


def _with_params(url: str, params: Mapping[str, Any]) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update({k: str(v) for k, v in params.items()})
    return urlunsplit(parts._replace(query=urlencode(query)))


class RedditFeed:
    """A subreddit's newest posts from the public JSON listing, paged with ``after`` back to ``since``."""

    kind = "reddit"

    def __init__(self, name: str, target: str, *, http: Http | None = None, max_pages: int = 10,
                 limit: int = 100) -> None:
        self.name, self.url, self.max_pages, self.limit = name, reddit_url(target), max_pages, limit
        self.http = http or Http()

    def fetch(self, since: Any = None) -> Fetched:
        since = parse_utc(since)
        after: str | None = None
        parts, findings, rejected, pages, reached = [], [], 0, 0, False
        while pages < self.max_pages:
            params = {"limit": self.limit, "raw_json": 1, **({"after": after} if after else {})}
            r = self.http.get(_with_params(self.url, params))
            items, nxt, found, bad = parse_reddit(r.content, self.name, url=r.url)
            pages += 1
            parts.append(items)
            findings += found
            rejected += bad
            if since is not None and len(items) and items["ts"].min() < since:
                reached = True
                break
            if not nxt or nxt == after or items.empty:
                break
            after = nxt
        return _fetched(self.name, parts, findings, pages, reached, rejected)


# --- files ---------------------------------------------------------------------------------------

def _split_symbols(value: Any) -> tuple[str, ...]:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(s.strip() for s in re.split(r"[,;| ]+", str(value)) if s.strip())


def read_items_file(path: str | Path, *, source: str | None = None) -> Fetched:
    """Items from a CSV or JSON Lines file with ``timestamp`` (ISO 8601 with a zone; naive means UTC),
    ``source``, ``id``, ``title`` and optional ``text`` and ``symbols`` (a list, or a string separated by
    commas, semicolons, bars or spaces).  ``source`` fills a missing source column.  Lines that cannot
    be read are left out with a ``malformed_item`` finding; a file with none readable raises `Malformed`.
    """
    path = Path(path)
    name = source or path.stem
    try:
        raw = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise Malformed(f"cannot read {path}: {exc}") from exc
    records: list[Any] = []
    bad: list[dict[str, Any]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append((n, json.loads(line)))
            except ValueError as exc:
                bad.append({"line": n, "reason": f"not JSON: {exc}"[:120]})
    elif path.suffix.lower() in (".csv", ".txt"):
        records = list(enumerate(csv.DictReader(io.StringIO(raw)), 2))
    else:
        raise Malformed(f"{path}: expected a .csv or .jsonl file of news items")
    rows = []
    for n, rec in records:
        try:
            if not isinstance(rec, dict):
                raise TypeError("not an object")
            ts = pd.Timestamp(rec["timestamp"])
            ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
            if ts is pd.NaT:
                raise ValueError("empty timestamp")
            title = plain_text(rec["title"])
            ident = str(rec.get("id") or "").strip()
            if not title:
                raise ValueError("empty title")
        except (KeyError, TypeError, ValueError) as exc:
            bad.append({"line": n, "reason": repr(exc)[:120]})
            continue
        ident = ident or "title:" + hashlib.sha256(normalise_title(title).encode()).hexdigest()[:32]
        rows.append({"ts": ts, "source": str(rec.get("source") or name).strip() or name, "item_id": ident,
                     "title": title, "text": plain_text(rec.get("text")),
                     "symbols": _split_symbols(rec.get("symbols"))})
    if not rows and bad:
        raise Malformed(f"{path}: no readable item among {len(bad)} lines, e.g. line {bad[0]['line']}: "
                        f"{bad[0]['reason']}")
    findings = []
    if bad:
        findings.append(Finding(DATA_KIND, "malformed_item", "warning", _first_ts(rows), None,
                                {"message": f"{len(bad)} lines of {path.name} left out", "rows": len(bad),
                                 "examples": bad[:5]}))
    return Fetched(name, _frame(rows), findings, 1, True, len(bad))


# --- configuration -------------------------------------------------------------------------------

@dataclass(frozen=True)
class FeedSpec:
    """A configured feed: ``[NAME=]KIND:TARGET`` with KIND ``rss`` (a URL) or ``reddit`` (a subreddit
    name or listing URL).  NAME is the source stored in ``sentiment_scores`` (default derived)."""

    name: str
    kind: str
    target: str


_FEED_KINDS = ("rss", "reddit")


def parse_feed_spec(spec: str) -> FeedSpec:
    """``'coindesk=rss:https://…/rss/'`` or ``'reddit:Bitcoin'`` as a `FeedSpec`."""
    name, sep, rest = spec.strip().partition("=")
    if not sep or ":" in name or "/" in name:
        name, rest = "", spec.strip()
    kind, sep, target = rest.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in _FEED_KINDS or not target.strip():
        raise BadRequest(f"feed {spec!r}: expected [NAME=]KIND:TARGET with KIND one of {_FEED_KINDS}",
                         check="bad_feed")
    target = target.strip()
    if not name:
        if kind == "reddit":
            name = "reddit/r/" + (urlsplit(target).path.split("/r/")[-1].split("/")[0] if "://" in target
                                  else target.removeprefix("r/"))
        else:
            name = urlsplit(target).hostname or target
    name = name.strip()
    # 32: the width of data_quality_logs.source, where the feed's findings are keyed.
    if not re.fullmatch(r"[\w.\-/]{1,32}", name):
        raise BadRequest(f"feed name {name!r}: use 1-32 letters, digits and . - _ /", check="bad_feed")
    if kind == "rss" and urlsplit(target).scheme not in ("http", "https"):
        raise BadRequest(f"feed {spec!r}: an rss target must be an http(s) URL", check="bad_feed")
    return FeedSpec(name, kind, target)


def make_feed(spec: FeedSpec | str, *, http: Http | None = None, max_pages: int | None = None) -> NewsFeed:
    """The source object of a feed spec."""
    spec = parse_feed_spec(spec) if isinstance(spec, str) else spec
    kw = {"max_pages": max_pages} if max_pages else {}
    if spec.kind == "reddit":
        return RedditFeed(spec.name, spec.target, http=http, **kw)
    return RssFeed(spec.name, spec.target, http=http, **kw)


def parse_feeds(specs: Sequence[str]) -> list[FeedSpec]:
    """Every spec parsed; two feeds with one name are refused (their rows would overwrite each other)."""
    feeds = [parse_feed_spec(s) for s in specs]
    names = [f.name for f in feeds]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise BadRequest(f"feed names must be unique; repeated: {dup}", check="bad_feed")
    return feeds


__all__ = ["DATA_KIND", "DEFAULT_KEYWORDS", "FeedRejected", "FeedSpec", "Fetched", "Http", "ITEM_COLUMNS",
           "NewsFeed", "RedditFeed", "RssFeed", "Tagger", "base_asset", "dedupe", "empty_items", "make_feed",
           "normalise_title", "parse_feed", "parse_feed_spec", "parse_feeds", "parse_keywords", "parse_reddit",
           "plain_text", "read_items_file", "reddit_url"]
