"""What a replay is: its request checked against the stored data, its steps and its policies.

A replay of days `start`..`end` every `every` has steps k = 1..K.  Step k's decision time t_k is the
midnight that starts day d_k = start + (k - 1) x every; the versions it decides among are trained as of
d_k - 1 (data strictly before t_k, the nightly retrain of the evening before), and its choices trade the
bars in (t_k, t_{k+1}] (the last step: up to the end of `end`).  Trainings are identified by their
as-of *day*, so `every` is a whole number of days.

Bad input is refused with a `RequestError` before anything is written (`plan_replay`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from brain_tasks.brain import replays
from brain_tasks.intake import (BadArgumentError, BadDateError, RequestError, check_as_of, check_models,
                                check_symbols, replay_id_for)
from brain_tasks.settings import Settings
from brain_tasks.timekeeping import BadTimeframe, day_end, timeframe_seconds

DAY = 86400
BRAIN = "brain"
NEWEST = "newest:"
BEST_COMPOSITE = "best_composite"
FLAT_POLICY, BUY_AND_HOLD_POLICY = "flat", "buy_and_hold"


def _unit_interval(value: str) -> float:
    v = float(value)
    if not 0 < v < 1:
        raise ValueError("must lie strictly between 0 and 1")
    return v


def _evidence_bars(value: str) -> int:
    v = int(value)
    if v < 3:
        raise ValueError("must be an integer >= 3")
    return v


# The Brain settings a `--grid` may vary, with their parsers: each combination is a policy brain[k=v,...].
GRID_SETTINGS = {"dsr_level": _unit_interval, "min_evidence_bars": _evidence_bars}


@dataclass(frozen=True)
class Step:
    index: int            # 1..K
    as_of: dt.date        # the versions' as-of day: data strictly before `decided`
    decided: dt.datetime  # t_k (midnight UTC); bars in (t_k, t_{k+1}] trade this step's choices


@dataclass(frozen=True)
class ReplayPlan:
    replay_id: str
    symbols: list[str]
    models: list[str]
    start: dt.date
    end: dt.date
    every: str
    grid: dict[str, list[Any]]
    config_hash: str

    @property
    def steps(self) -> list[Step]:
        n = timeframe_seconds(self.every) // DAY
        days = [self.start + dt.timedelta(days=n * i) for i in range((self.end - self.start).days // n + 1)]
        return [Step(k + 1, d - dt.timedelta(days=1), day_end(d - dt.timedelta(days=1))) for k, d in enumerate(days)]

    @property
    def window_end(self) -> dt.datetime:
        """The end of the last traded day: bars up to it are traded, none after."""
        return day_end(self.end)

    @property
    def variants(self) -> list[tuple[str, dict[str, Any]]]:
        """(policy name, setting overrides) of brain and each grid combination, in a fixed order."""
        out: list[tuple[str, dict[str, Any]]] = [(BRAIN, {})]
        keys = sorted(k for k, v in self.grid.items() if v)
        if not keys:
            return out
        for combo in itertools.product(*(self.grid[k] for k in keys)):
            overrides = dict(zip(keys, combo))
            out.append((BRAIN + "[" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in overrides.items()) + "]", overrides))
        return out

    @property
    def policies(self) -> list[str]:
        return ([name for name, _ in self.variants] + [NEWEST + m for m in self.models]
                + [BEST_COMPOSITE, FLAT_POLICY, BUY_AND_HOLD_POLICY])

    def params(self, settings: Settings) -> dict[str, Any]:
        """What the replay row records: the steps, the policies and the settings the decisions used."""
        return {"steps": [{"step": s.index, "as_of": s.as_of.isoformat(), "decided": s.decided.isoformat()}
                          for s in self.steps],
                "policies": self.policies, "timeframe": settings.timeframe, "exchange": settings.exchange,
                "dsr_level": settings.dsr_level, "min_evidence_bars": settings.min_evidence_bars}

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "start": self.start.isoformat(), "end": self.end.isoformat()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReplayPlan:
        values = dict(data)
        values["start"], values["end"] = (dt.date.fromisoformat(str(values[k])) for k in ("start", "end"))
        return cls(**values)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ReplayPlan:
        """The plan of a stored replay (`brain.replays.get_replay`)."""
        return cls.from_json({k: row[k] for k in ("replay_id", "symbols", "models", "start", "end", "every", "grid",
                                                  "config_hash")})


def parse_grid(grid: Mapping[str, Any] | Sequence[str] | None) -> dict[str, list[Any]]:
    """`{"dsr_level": [0.9, 0.95]}` or `["dsr_level=0.9,0.95", ...]` as setting -> sorted distinct values;
    an unknown setting or a bad value is a `RequestError`."""
    if not grid:
        return {}
    if isinstance(grid, str):
        grid = [grid]
    raw: dict[str, list[Any]] = {}
    if isinstance(grid, Mapping):
        raw = {str(k): list(v) if isinstance(v, (list, tuple)) else [v] for k, v in grid.items()}
    else:
        for item in grid:
            key, sep, values = str(item).partition("=")
            if not sep or not values:
                raise BadArgumentError(f"--grid {item!r}: expected SETTING=V1,V2 (settings: {', '.join(GRID_SETTINGS)})")
            raw.setdefault(key.strip(), []).extend(v.strip() for v in values.split(","))
    out = {}
    for key, values in raw.items():
        if key not in GRID_SETTINGS:
            raise BadArgumentError(f"unknown --grid setting {key!r}; known: {', '.join(GRID_SETTINGS)}")
        try:
            out[key] = sorted(set(GRID_SETTINGS[key](str(v)) for v in values))
        except ValueError as exc:
            raise BadArgumentError(f"--grid {key}: bad value in {values}: {exc}") from None
    return out


def check_every(every: str, settings: Settings) -> str:
    try:
        seconds = timeframe_seconds(every)
    except BadTimeframe as exc:
        raise BadArgumentError(f"--every: {exc}") from None
    bar = timeframe_seconds(settings.timeframe)
    if seconds < bar:
        raise BadArgumentError(f"--every {every} is shorter than a bar ({settings.timeframe})")
    if seconds % DAY:
        raise BadArgumentError(f"--every {every}: a replay steps by whole days (trainings are identified by their "
                               "as-of day); use 1d, 2d, 1w, ...")
    return every


def plan_replay(engine: sa.Engine, settings: Settings, symbols: Any, models: Any, start: Any, end: Any,
                every: str = "1d", grid: Any = None) -> ReplayPlan:
    """The replay asked for, checked against the stored data; a `RequestError` (one line) otherwise.

    Refused: malformed or unknown symbols, unknown models or grid settings, --from after --to, --every
    shorter than a bar (or not whole days), and a window outside the stored data (--to after the newest
    stored bar, or --from not after the oldest one).  A symbol whose history before t_1 is too short to
    train on is not refused: the replay skips it with the reason."""
    from brain_tasks.service.steps.reads import train_config

    symbols = check_symbols(symbols)
    models = check_models(models or settings.models)
    if start is None or end is None:
        raise BadDateError("a replay needs --from and --to")
    start, end = check_as_of(start), check_as_of(end)
    if start > end:
        raise BadDateError(f"--from {start} is after --to {end}")
    every = check_every(every, settings)
    grid = parse_grid(grid)
    spans = {}
    for s in symbols:
        span = replays.stored_span(engine, settings.exchange, s, settings.timeframe)
        if span is None:
            raise RequestError(f"unknown symbol {s}: no {settings.timeframe} candles stored on {settings.exchange!r}")
        spans[s] = span
    oldest, newest = min(f for f, _ in spans.values()), max(last for _, last in spans.values())
    first_step = day_end(start - dt.timedelta(days=1))
    if newest < day_end(end) - dt.timedelta(days=1):
        raise RequestError(f"the window ends after the stored data: --to {end} is after the newest stored bar "
                           f"({newest:%Y-%m-%d %H:%M} UTC)")
    if oldest >= first_step:
        raise RequestError(f"the window starts before the stored data: nothing is stored before --from {start} "
                           f"(oldest bar {oldest:%Y-%m-%d %H:%M} UTC) to train on")
    chash = train_config(settings).config_hash()
    return ReplayPlan(replay_id_for(symbols, models, start, end, every, grid, chash), symbols, models, start, end,
                      every, grid, chash)
