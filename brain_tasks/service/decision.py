"""The decision the Brain serves to the Engine: one `Signal` per closed bar of a symbol.

Its own module, light on purpose: the client, serving and publishing all speak it, and none of them
should have to import another to get it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Signal:
    """The Brain's decision for one closed bar of one symbol.

    `ts` is the bar's open time (UTC); `position` is -1 / 0 / +1 by the backtest's own rule and `size`
    the fraction of the unit stake (the walk-forward metrics trade size 1).  `model_type` is 'flat'
    (version None, prediction None) when no model was chosen for the regime or the data was stale;
    `tradeable` False means "stay flat" and `reason` says why.  `data_age_seconds`: how long ago the
    bar closed when the signal was computed.
    """

    symbol: str
    ts: dt.datetime
    regime: str | None
    model_type: str
    version: int | None
    prediction: float | None
    position: int
    size: float
    confidence: float | None
    tradeable: bool
    reason: str
    data_age_seconds: float
    artifact_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ts": self.ts.isoformat()}
