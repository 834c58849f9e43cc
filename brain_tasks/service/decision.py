"""The decision the Brain serves to the Engine: one `Signal` per closed bar of a symbol.

Its own module, light on purpose: the client, serving and publishing all speak it, and none of them
should have to import another to get it.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Signal:
    """The Brain's decision for one closed bar of one symbol.

    `ts` is the bar's open time (UTC); `position` is -1 / 0 / +1 by the backtest's own rule and `size`
    the fraction of the unit stake (the walk-forward metrics trade size 1).  `model_type` is 'flat'
    (version None, prediction None) when no model was chosen for the regime or the data was stale;
    `tradeable` False means "stay flat" and `reason` says why.  `data_age_seconds`: how long ago the
    bar closed when the signal was computed.

    The two gates (each makes a signal not tradeable, and the reason says which):
    - `in_distribution`: whether the bar's feature row lies inside what the version was trained on
      (`ml.distribution`); `dissimilarity` is the gate's statistic over its calibrated threshold
      (above 1 = outside; infinite when no feature could be computed; None when nothing was judged: a
      flat signal, or a version trained before the gate, which is served without it).
    - `model_age_seconds`: from the version's last training bar to this bar; beyond
      BRAIN_MODEL_MAX_AGE the version has expired.
    `context` is what the nightly audit needs to decide the bar again (not part of the JSON form).
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
    in_distribution: bool = True
    dissimilarity: float | None = None
    model_age_seconds: float | None = None
    context: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe: an infinite dissimilarity (no feature computed) is given as null, with
        `in_distribution` false."""
        out = {k: v for k, v in self.__dict__.items() if k != "context"}
        d = self.dissimilarity
        return {**out, "ts": self.ts.isoformat(), "dissimilarity": d if d is None or math.isfinite(d) else None}
