"""Scoring news items and aggregating them into hourly ``sentiment_scores`` rows.

The scorer is VADER (``vaderSentiment``, which ships its lexicon: nothing is downloaded at run time)
extended with `CRYPTO_LEXICON` and `CRYPTO_PHRASES`.  VADER's general-English lexicon misses the words
crypto headlines turn on ("rekt", "rug pull", "depeg") and misreads others ("moon" is neutral
there, "ETF approval" only mildly positive).  Values are on VADER's scale, -4 (most negative) to +4:
a hand-set prior, not a fit; the tests pin the ordering of hand-checked headlines.

Any object with ``name`` and ``score(texts) -> array of floats in [-1, 1]`` can replace it (a
transformer model where one is installed): see `Scorer`.

An hourly row (source, symbol, ts) summarises the items the source published in ``[ts, ts + 1h)``
about the symbol's base asset: ``score`` is their mean compound score in [-1, 1], ``magnitude`` their
mean absolute score (how strongly worded, whatever the sign) and ``n_items`` their count.  A row is
known at ``ts + 1h``, which is when `brain_tasks.ml.features` lets a bar see it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from brain_tasks.market.news import base_asset, plain_text

HOUR = pd.Timedelta(hours=1)
# Item text beyond this is not scored: the headline and its lead carry the tone; long bodies dilute it.
MAX_TEXT_CHARS = 300

# Single words.  Why each: the word's meaning in crypto news, where VADER has none or a wrong one.
CRYPTO_LEXICON: dict[str, float] = {
    "rekt": -3.0,         # wrecked: heavy losses
    "moon": 2.0,          # price going sharply up ("to the moon")
    "mooning": 2.5,
    "rug": -3.0,          # rug pull: developers vanish with the funds
    "rugged": -3.0,
    "rugpull": -3.5,
    "hack": -2.5,         # VADER: none ("hacked" -1.7 is too mild for a drained exchange)
    "hacked": -2.8,
    "hacker": -2.0,
    "hackers": -2.0,
    "exploit": -2.5,      # VADER -0.4: in DeFi an exploit means stolen funds
    "exploited": -2.5,
    "drained": -2.5,
    "bullish": 2.0,
    "bearish": -2.0,
    "pump": 1.0,
    "pumps": 1.0,
    "dump": -2.0,
    "dumps": -2.0,
    "fud": -1.5,          # fear, uncertainty and doubt
    "hodl": 1.0,
    "ath": 2.0,           # all-time high
    "delist": -2.5,
    "delisted": -2.5,
    "delisting": -2.5,
    "liquidated": -2.0,
    "liquidations": -1.5,
    "insolvent": -3.0,
    "insolvency": -3.0,
    "bankruptcy": -3.0,
    "depeg": -2.5,        # a stablecoin losing its peg
    "depegged": -2.5,
    "outflows": -1.0,
    "inflows": 1.0,
    "adoption": 1.5,
    "rally": 2.0,
    "rallies": 2.0,
    "surge": 2.0,
    "surges": 2.0,
    "soar": 2.2,
    "soars": 2.2,
    "plunge": -2.5,
    "plunges": -2.5,
    "tumble": -2.0,
    "tumbles": -2.0,
    "slump": -2.0,
    "slumps": -2.0,
    "crashes": -2.0,
    "selloff": -2.0,
    "sues": -1.5,
    "lawsuit": -1.5,
    "breach": -2.0,
    "halts": -1.5,
    "scammed": -2.7,
}

# Phrases become one token before scoring (VADER scores single tokens); the longest phrase wins.
CRYPTO_PHRASES: dict[str, float] = {
    "etf approval": 3.0,
    "etf approved": 3.0,
    "approves etf": 3.0,
    "etf rejection": -2.5,
    "etf rejected": -2.5,
    "rejects etf": -2.5,
    "etf denied": -2.5,
    "all-time high": 2.5,
    "all time high": 2.5,
    "record high": 2.5,
    "rug pull": -3.5,
    "rug pulled": -3.5,
    "to the moon": 2.5,
    "pump and dump": -2.5,
    "exit scam": -3.5,
    "bank run": -2.5,
    "short squeeze": 1.5,
    "sell-off": -2.0,
    "halts withdrawals": -3.0,
    "paused withdrawals": -3.0,
    "pauses withdrawals": -3.0,
}


@runtime_checkable
class Scorer(Protocol):
    """What aggregation needs from a scorer: a stable ``name`` and scores in [-1, 1], one per text."""

    name: str

    def score(self, texts: Sequence[str]) -> np.ndarray: ...


class VaderScorer:
    """VADER's compound score with the crypto lexicon and phrases above (or your own)."""

    name = "vader-crypto-1"

    def __init__(self, lexicon: dict[str, float] | None = None, phrases: dict[str, float] | None = None) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._vader = SentimentIntensityAnalyzer()
        lexicon = CRYPTO_LEXICON if lexicon is None else lexicon
        self._vader.lexicon.update({w.lower(): float(v) for w, v in lexicon.items()})
        phrases = phrases if phrases is not None else CRYPTO_PHRASES
        self._tokens: dict[str, str] = {}
        for phrase, value in phrases.items():
            token = "zz" + re.sub(r"\W+", "", phrase.lower())  # one word VADER will not split or strip
            self._tokens[phrase.lower()] = token
            self._vader.lexicon[token] = float(value)
        self._phrase = (re.compile(r"(?<!\w)(" + "|".join(re.escape(p) for p in sorted(self._tokens, key=len,
                                                                                      reverse=True)) + r")(?!\w)",
                                   re.IGNORECASE) if self._tokens else None)

    def score_one(self, text: str) -> float:
        """The compound score of one text, in [-1, 1]."""
        if self._phrase is not None:
            text = self._phrase.sub(lambda m: self._tokens[m.group(1).lower()], text)
        return float(self._vader.polarity_scores(text)["compound"])

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([self.score_one(t) for t in texts], dtype="float64")


def item_text(title: str, text: str | None = None) -> str:
    """What is scored: the title, then the start of the text."""
    body = plain_text(text)[:MAX_TEXT_CHARS]
    title = plain_text(title)
    return f"{title}. {body}" if body else title


def score_items(items: pd.DataFrame, scorer: Scorer) -> pd.DataFrame:
    """``items`` with a ``score`` column in [-1, 1] (clipped: a plug-in scorer may overshoot)."""
    texts = [item_text(t, x) for t, x in zip(items["title"], items["text"], strict=True)]
    scores = np.clip(np.asarray(scorer.score(texts), dtype="float64"), -1.0, 1.0) if texts else np.array([])
    return items.assign(score=scores)


SCORE_COLUMNS = ("source", "symbol", "ts", "score", "magnitude", "n_items")


def aggregate_hourly(scored: pd.DataFrame, symbols: Iterable[str]) -> pd.DataFrame:
    """Hourly rows per (source, symbol) of ``symbols``: an item counts for every symbol whose base asset
    it is about (``assets``).  Returns ``SCORE_COLUMNS`` sorted by source, symbol, ts."""
    by_asset: dict[str, list[str]] = {}
    for symbol in dict.fromkeys(symbols):
        by_asset.setdefault(base_asset(symbol), []).append(symbol)
    empty = pd.DataFrame({"source": pd.Series([], dtype=object), "symbol": pd.Series([], dtype=object),
                          "ts": pd.Series([], dtype="datetime64[ns, UTC]"), "score": pd.Series([], dtype="float64"),
                          "magnitude": pd.Series([], dtype="float64"), "n_items": pd.Series([], dtype="int64")})
    if scored.empty or not by_asset:
        return empty
    df = scored[["source", "ts", "score", "assets"]].explode("assets").dropna(subset=["assets"])
    df = df[df["assets"].isin(list(by_asset))]
    if df.empty:
        return empty
    df = df.assign(symbol=df["assets"].map(by_asset)).explode("symbol")
    df = df.assign(ts=df["ts"].dt.floor("h"), abs_score=df["score"].abs())
    out = (df.groupby(["source", "symbol", "ts"], sort=True)
           .agg(score=("score", "mean"), magnitude=("abs_score", "mean"), n_items=("score", "size"))
           .reset_index())
    out["n_items"] = out["n_items"].astype("int64")
    out["score"] = out["score"].clip(-1.0, 1.0)
    return out[list(SCORE_COLUMNS)]


__all__ = ["CRYPTO_LEXICON", "CRYPTO_PHRASES", "HOUR", "SCORE_COLUMNS", "Scorer", "VaderScorer",
           "aggregate_hourly", "item_text", "score_items"]
