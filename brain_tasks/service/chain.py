"""ChainState: the one thing a symbol's chain hands from step to step.

A symbol's chain is train (one task per model type, in parallel) -> compare -> importance ->
rollback -> select -> sizer -> record outcome (`brain_tasks.workflows.symbol_canvas`); the nightly's is
analyse -> record outcome.  Every step takes a `ChainState` and returns one, with the fields it owns
filled in.  Over the wire (Celery's JSON serializer) it travels as `to_json()` and is rebuilt with
`from_json()`; a parallel group's list of states is joined by `merged()`.

Every field is declared here once, with the step that fills it.  The fields marked `recorded` are what
the symbol's row in training_runs keeps as its details (`details()`); the rest travels in the task
results only.  A field left at None was not reached: the chain ended earlier, or it is another kind of
chain's field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from brain_tasks.vocabulary import Action, Status


def _recorded(default: Any = None) -> Any:
    return field(default=default, metadata={"recorded": True})


@dataclass(frozen=True)
class ModelOutcome:
    """What training one model type (or the symbol's sizer) came to: a version found, trained or
    reused, or the reason there is none.  Returned by the shared training protocol
    (`steps.protocol.train_once`)."""

    model_type: str
    status: Status
    version: int | None = None
    trained: bool = False              # False: an existing version was found or reused
    reason: str | None = None          # why this outcome (or why skipped)
    error: str | None = None           # set when status is failed or stale
    config_hash: str | None = None
    reused_as_of: str | None = None    # inputs unchanged: the as-of day of the version reused
    step: str | None = None            # the step that failed, when it did
    seconds: float | None = None
    # Training only: CPU seconds of the whole task, of the walk-forward without importance, of importance.
    cpu_s: float | None = None
    train_cpu_s: float | None = None
    importance_cpu_s: float | None = None
    # The sizer only: the rule that sizes (an agent must pass its gate), why, and the version sized.
    sizes: str | None = None
    gate: str | None = None
    source: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelOutcome:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        return cls(**{**values, "status": Status(values["status"])})


@dataclass(frozen=True)
class ChainState:
    """The state of one symbol's chain for one as-of day."""

    # --- identity, set when the chain starts ---------------------------------------------------------
    symbol: str
    as_of: dt.date
    # --- how the chain stands: any step may end it (failed, stale) or find nothing to do (skipped) -----
    status: Status = Status.OK
    error: str | None = None
    step: str | None = _recorded()              # the step that ended the chain early
    reason: str | None = _recorded()            # why the chain was skipped (nightly: no champion yet)
    # --- train: one outcome per model type, joined from the parallel trainings -----------------------
    models: dict[str, ModelOutcome] = field(default_factory=dict)
    config_hash: str | None = None              # the training config's hash (the run's natural key)
    # --- compare: this run's versions ranked by composite score --------------------------------------
    failed_models: dict[str, str] | None = _recorded()   # model type -> why it has no version
    versions: dict[str, int] | None = None      # model type -> this run's version
    best: dict[str, Any] | None = _recorded()   # {"model_type", "version"} of the best candidate
    ranking: list[str] | None = None            # model types, best first
    benchmarks: dict[str, float] | None = None  # flat and buy-and-hold composite scores
    unchanged: bool = False                     # every version reused from an earlier day: nothing is new
    # --- importance: stored importance rows per model type -------------------------------------------
    importance_rows: dict[str, int] | None = None
    # --- rollback: the champion decision {"action", "reason"} ---------------------------------------
    rollback: dict[str, str] | None = _recorded()
    # --- select: what trades in each volatility regime -----------------------------------------------
    selection: dict[str, str] | None = _recorded()      # regime (and "all") -> model type or "flat"
    tradeable: list[str] | None = _recorded()           # regimes whose choice trades
    # --- sizer: its outcome never fails the chain; recorded, so the row says why none was trained ----
    sizer: ModelOutcome | None = _recorded()
    # --- nightly analysis ----------------------------------------------------------------------------
    live: dict[str, Any] | None = _recorded()           # the live check: {"action", "reason"}
    live_bars: dict[str, int] | None = None             # served signals' bars tracked, per version
    drifted: list[str] | None = _recorded()
    drift_size: dict[str, float] | None = _recorded()
    n_features: int | None = _recorded()
    importance_movers: list[dict[str, Any]] | None = _recorded()
    # The audit of the signals served since the last one (`service.audit`): {"audited", "mismatches",
    # "first_mismatch"}.
    audit: dict[str, Any] | None = _recorded()
    # --- replay (service/replay_walk.py): the symbol's walk, or why it was skipped ----------------------
    replay: dict[str, Any] | None = _recorded()         # n_bars, dsr, pbo, brain's actions, errors
    # What this run of the walk cost and found: CPU seconds of the walk (`cpu_s`, of it `decide_cpu_s`)
    # and of the trainings it received (`train_cpu_s`, `n_trained`), and whether it found its stored
    # results (`reused`).  Not recorded: two runs of the same replay differ here and nowhere else, so it
    # travels in the task results only (`replay_pool` returns them; bench/replay.py prints them).
    replay_run: dict[str, Any] | None = None

    # --- building ------------------------------------------------------------------------------------
    @classmethod
    def start(cls, symbol: str, as_of: dt.date) -> ChainState:
        return cls(symbol=symbol, as_of=as_of)

    def update(self, **changes: Any) -> ChainState:
        return dataclasses.replace(self, **changes)

    def with_model(self, outcome: ModelOutcome) -> ChainState:
        return self.update(models={**self.models, outcome.model_type: outcome})

    def failed(self, step: str, error: str, status: Status = Status.FAILED) -> ChainState:
        return self.update(status=status, step=step, error=error)

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @property
    def action(self) -> Action | None:
        """The champion decision's action, once the rollback step has run."""
        return Action(self.rollback["action"]) if self.rollback else None

    @classmethod
    def merged(cls, states: Iterable[ChainState]) -> ChainState:
        """The states of a parallel group (one training each) as one: their models together."""
        states = list(states)
        if not states:
            raise ValueError("no chain state to merge")
        first = states[0]
        models: dict[str, ModelOutcome] = {}
        for s in states:
            if (s.symbol, s.as_of) != (first.symbol, first.as_of):
                raise ValueError(f"cannot merge the states of {s.symbol} {s.as_of} and {first.symbol} {first.as_of}")
            models.update(s.models)
        return first.update(models=models)

    # --- the wire ------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "as_of":
                value = value.isoformat()
            elif f.name == "models":
                value = {k: m.to_json() for k, m in value.items()}
            elif isinstance(value, ModelOutcome):
                value = value.to_json()
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChainState:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"undeclared chain state keys: {sorted(unknown)}")
        values = dict(data)
        values["as_of"] = dt.date.fromisoformat(str(values["as_of"]))
        values["status"] = Status(values.get("status", Status.OK))
        values["models"] = {k: ModelOutcome.from_json(m) for k, m in (values.get("models") or {}).items()}
        if values.get("sizer") is not None:
            values["sizer"] = ModelOutcome.from_json(values["sizer"])
        return cls(**values)

    @classmethod
    def from_wire(cls, value: Any) -> ChainState:
        """What a task received from the step before it: one state, or a group's list of them."""
        if isinstance(value, ChainState):
            return value
        if isinstance(value, Mapping):
            return cls.from_json(value)
        if isinstance(value, list) and value:
            return cls.merged(cls.from_wire(v) for v in value)
        raise ValueError(f"not a chain state: {type(value).__name__}")

    # --- what training_runs keeps -----------------------------------------------------------------------
    def details(self) -> dict[str, Any]:
        """The recorded fields that the chain reached (not None), JSON-ready."""
        return {f.name: value.to_json() if isinstance(value, ModelOutcome) else value
                for f in dataclasses.fields(self)
                if f.metadata.get("recorded") and (value := getattr(self, f.name)) is not None}
