"""A replay's decision walk for one symbol: what each policy would have chosen at each step, and what
that would have earned bar by bar.

Point in time.  At step t_k the walk knows the versions trained as of t_k's eve (the replay's own
trainings, so as-of <= t_k), the bars before t_k (every read below that decides is bounded by t_k:
`steps.promote.recent_returns` on the candidate's out-of-sample bars, `steps.promote.live_pair` on the
bars up to t_k) and the out-of-time returns earned so far.  The bars after t_k are used only to *trade*:
each bar's regime comes from the bars up to it (`ml.regimes.volatility_regimes` is causal) and each
version's prediction from features of the bars up to it (`ml.features` is causal).

The `brain` policy applies the decision code the chain's steps call, to a champion held in memory:
`steps.compare.rank_versions`, `steps.promote.promotion` (`ml.rollback.promotion_decision`),
`steps.promote.live_pair` with `ml.rollback.live_rollback_decision`, and `steps.choose.choose_per_regime`
(`ml.regimes.select_per_regime` with the previous choice, i.e. its hysteresis).  It trades what serving
(`service.serving`) would trade: the regime's chosen model, flat where the choice is flat *or
buy-and-hold* (serving has no version to trade for buy-and-hold and stays flat), and the champion in a
bar whose regime is unknown or has no choice yet, unless the champion loses to flat (then flat).  The walk never writes champion, regime_choices, champion_history,
rollback_logs or signals.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from brain_tasks.brain import registry, replays
from brain_tasks.brain.tables import ModelManifest
from brain_tasks.errors import DataError
from brain_tasks.service.chain import ChainState
from brain_tasks.service.replay_plan import (BEST_COMPOSITE, BUY_AND_HOLD_POLICY, FLAT_POLICY, NEWEST, ReplayPlan,
                                             Step)
from brain_tasks.service.steps.choose import choose_per_regime, configs_tried, selection_candidates
from brain_tasks.service.steps.compare import rank_versions
from brain_tasks.service.steps.promote import live_pair, promotion, recent_returns
from brain_tasks.service.steps.reads import HeldMarket, Reads, dataset_for, label, load_version, market_kwargs
from brain_tasks.settings import Settings
from brain_tasks.timekeeping import timeframe_seconds
from brain_tasks.vocabulary import Action, Status

CHAMPION = "champion"  # the name a brain step trades where the bar's regime is unknown (serving's fallback)
OTHERWISE = replays.OTHERWISE


@dataclass
class StepDecision:
    """One policy at one step: regime -> name to trade (a model type, CHAMPION, flat, buy_and_hold), the
    version each name means at this step, the action and a one-line reason."""

    trade: dict[str, str]
    versions: dict[str, ModelManifest | None]
    action: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Walk:
    """Everything the decisions of one symbol read, with caches shared by the policies (the grid's brain
    variants ask the same comparisons)."""

    engine: sa.Engine
    settings: Settings
    symbol: str
    steps: list[Step]
    by_step: dict[int, dict[str, ModelManifest]]   # step -> model type -> the version trained as of its eve
    reused: dict[int, bool]                         # step -> every version came from an earlier day's inputs
    end: dt.datetime | None = None                  # the last bar read (the replay's window end); None: t_K
    _cache: dict[Any, Any] = field(default_factory=dict)
    _reads: WalkReads | None = None

    @property
    def reads(self) -> WalkReads:
        """The walk's reads, held: the bars up to `end` (each read sliced to its own bounds, so a step
        never sees a bar at or after its own end), models, OOS frames and training sets by version."""
        if self._reads is None:
            self._reads = WalkReads(self.engine, self.settings, self.symbol,
                                    self.end or max(s.decided for s in self.steps))
        return self._reads

    def cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def ranking(self, k: int) -> list[tuple[float, ModelManifest, dict]]:
        return self.cached(("rank", k), lambda: rank_versions(self.engine, list(self.by_step[k].values())))

    def recent(self, candidate: ModelManifest, champion: ModelManifest) -> Any:
        return self.cached(("recent", _key(candidate), _key(champion)),
                           lambda: recent_returns(self.engine, self.settings, candidate, champion, self.reads))

    def live(self, current: ModelManifest, previous: ModelManifest, step: Step) -> Any:
        return self.cached(("live", _key(current), _key(previous), step.index),
                           lambda: live_pair(self.engine, self.settings, current, previous, step.decided,
                                             self.reads))

    def oos(self, version: ModelManifest) -> pd.DataFrame:
        return self.reads.oos(version)

    def loses_to_flat(self, version: ModelManifest) -> bool:
        """Serving's test of a champion it would fall back to (`Server.loses_to_flat`): its walk-forward
        result, written with the version and never again, so known at any step that knows the version."""
        return self.cached(("loses_to_flat", _key(version)), lambda: registry.loses_to_flat(self.engine, version))

    def n_configs(self, k: int) -> int:
        """Configurations tried for the symbol up to this step (the deflated Sharpe ratio's trials, as the
        chain counts them: `steps.choose.configs_tried`, here as of t_k at the latest)."""
        day = self.steps[k - 1].as_of
        return self.cached(("configs", k), lambda: configs_tried(self.engine, self.symbol, until=day))


class WalkReads(Reads):
    """`steps.reads.Reads` for one symbol's walk: the market read once and sliced (`HeldMarket`), and each
    version's model, OOS frame and rebuilt training set (digest checked, as the chain checks it) read
    once.  Same values as the Brain's reads, without re-reading them for every step and policy."""

    def __init__(self, engine: sa.Engine, settings: Settings, symbol: str, end: Any) -> None:
        super().__init__(engine, settings)
        self.symbol, self.end = symbol, end
        self._held: HeldMarket | None = None
        self._models: dict[tuple[str, int], Any] = {}
        self._oos: dict[tuple[str, int], pd.DataFrame] = {}
        self._datasets: dict[tuple[str, int], tuple[pd.DataFrame, pd.Series]] = {}
        self._windows: dict[tuple[Any, ...], Any] = {}

    def market(self, symbol: str, start: Any = None, end: Any = None) -> dict[str, pd.DataFrame | None]:
        if symbol == self.symbol and end is not None and end <= self.end:
            if self._held is None:
                self._held = HeldMarket(self.engine, self.settings, symbol, self.end)
            return self._held.read(self.settings, start, end)
        return super().market(symbol, start, end)

    def model(self, manifest: ModelManifest) -> Any:
        if _key(manifest) not in self._models:
            self._models[_key(manifest)] = super().model(manifest)
        return self._models[_key(manifest)]

    def oos(self, manifest: ModelManifest) -> pd.DataFrame:
        if _key(manifest) not in self._oos:
            self._oos[_key(manifest)] = super().oos(manifest)
        return self._oos[_key(manifest)]

    def dataset(self, manifest: ModelManifest) -> tuple[pd.DataFrame, pd.Series]:
        if _key(manifest) not in self._datasets:
            self._datasets[_key(manifest)] = self._from_history(manifest) or dataset_for(
                self.engine, self.settings, manifest,
                lambda _e, _s, symbol, end=None, start=None: self.market(symbol, start, end))
        return self._datasets[_key(manifest)]

    def _from_history(self, manifest: ModelManifest) -> tuple[pd.DataFrame, pd.Series] | None:
        """The version's training set as rows of one build over the held bars from its first bar on
        (`ml.pipeline.dataset_prefix`): every version of the symbol starts at the same stored bar, so
        one build serves them all (and the trading).  Taken only when its digest is the manifest's, the
        same proof the rebuild gives; else None (the rebuild)."""
        from brain_tasks.ml.features import usable_candles
        from brain_tasks.ml.pipeline import TrainConfig, dataset_digest, dataset_prefix

        end = manifest.data_end + dt.timedelta(microseconds=1)
        if manifest.symbol != self.symbol or not end <= self.end:
            return None
        config = TrainConfig.from_dict(manifest.config)
        built = self.window_dataset(manifest.symbol, dataclasses.replace(config, min_rows=1), manifest.data_start,
                                    self.end)
        if built is None:
            return None
        key = ("usable", self._start_key(manifest.data_start))
        if key not in self._windows:
            candles = self.market(manifest.symbol, start=manifest.data_start, end=self.end)["candles"]
            self._windows[key] = pd.DatetimeIndex(pd.to_datetime(usable_candles(candles)["ts"], utc=True))
        X, y = dataset_prefix(built[0], built[1], self._windows[key], pd.Timestamp(end), config)
        if list(X.columns) != list(manifest.feature_names) or dataset_digest(X, y) != manifest.dataset_digest:
            return None
        return X, y

    def _start_key(self, start: Any) -> Any:
        """A held read's start as the first held bar it keeps: reads from before the first stored bar
        and from it are the same read."""
        if self._held is None:
            self._held = HeldMarket(self.engine, self.settings, self.symbol, self.end)
        first = self._held.first
        return first if start is None or pd.Timestamp(start) <= first else pd.Timestamp(start)

    def window_dataset(self, symbol: str, config: Any, start: Any, end: Any) -> Any:
        # One build per (config, window): the live check's two versions share a config (it is model-type
        # free) and a window; the history every training set is cut from is the one the walk trades.
        held = symbol == self.symbol and end is not None and end <= self.end
        key = (symbol, config, self._start_key(start) if held else start, end)
        if key not in self._windows:
            self._windows[key] = super().window_dataset(symbol, config, start, end)
        return self._windows[key]


def _key(m: ModelManifest) -> tuple[str, int]:
    return (m.model_type, int(m.version))


# --- the policies' decisions -------------------------------------------------------------------------

def brain_decisions(walk: Walk, settings: Settings) -> list[StepDecision]:
    """The Brain's decision loop over the steps, with `settings` (a grid variant's, or the replay's)."""
    from brain_tasks.ml.regimes import BUY_AND_HOLD, FLAT, SCOPES
    from brain_tasks.ml.rollback import live_rollback_decision, promotion_decision

    champion: ModelManifest | None = None
    previous: ModelManifest | None = None
    choice: dict[str, dict[str, Any]] = {}   # regime -> select_per_regime's entry
    chosen_versions: dict[str, ModelManifest] = {}
    out = []
    for step in walk.steps:
        k, notes, details = step.index, [], {}
        versions = walk.by_step[k]
        # The nightly analysis of the evening before: is the champion worse live than the one it replaced?
        if champion is not None and previous is not None:
            ours, theirs = walk.live(champion, previous, step)
            verdict = live_rollback_decision(ours, theirs, alpha=0.05, min_samples=settings.min_evidence_bars)
            details["live"] = {"action": str(verdict.action), "n": verdict.stats.get("n"),
                               "p_value": verdict.stats.get("p_value")}
            if verdict.action == Action.ROLLBACK:
                notes.append(f"{label(champion)} rolled back to {label(previous)}: {verdict.reason}")
                champion, previous = previous, champion
        if not versions:
            action, reason = Action.NONE, "no version was trained for this step: the choices stand"
        elif walk.reused[k]:
            action, reason = Action.UNCHANGED, "inputs unchanged since the versions of an earlier day: nothing to decide"
        else:
            ranked = walk.ranking(k)
            best = ranked[0][1]
            action, reason, stats = promotion(walk.engine, settings, step.as_of, best, champion, promotion_decision,
                                              recent=walk.recent)
            details["promotion"] = {"candidate": label(best), "n": stats.get("n"), "p_value": stats.get("p_value")}
            rejected = None
            if action == Action.PROMOTE:
                if champion is not None and _key(champion) != _key(best):
                    previous = champion
                champion = best
            elif action in (Action.KEEP, Action.INSUFFICIENT_EVIDENCE) and champion is not None \
                    and _key(champion) != _key(best):
                rejected = _key(best)
            in_use = {**chosen_versions, **({champion.model_type: champion} if champion is not None else {})}
            candidates = selection_candidates(list(versions.values()), rejected, in_use)
            if candidates:
                choice = choose_per_regime(walk.engine, settings, candidates, walk.n_configs(k),
                                           {r: c["model"] for r, c in choice.items()}, oos=walk.oos)
                chosen_versions = {v.model_type: v for v in candidates}
            else:  # every candidate set aside and none stands in: the chain's select_model records flat
                choice = {r: {"model": FLAT, "confidence": None, "tradeable": False} for r in SCOPES}
                chosen_versions = {}
        trade: dict[str, str] = {}
        names: dict[str, ModelManifest | None] = {}
        # Serving's fallback where a regime has no choice (before the first selection) or the bar's regime
        # is unknown: the champion, unless it loses to flat (then flat, as the chooser treats such a model).
        fallback = FLAT
        if champion is not None and not walk.loses_to_flat(champion):
            fallback = CHAMPION
            names[CHAMPION] = champion
        elif champion is not None:
            details["champion_loses_to_flat"] = True
        for regime in SCOPES:
            if regime == "all":
                continue
            entry = choice.get(regime)
            if entry is None:
                trade[regime] = fallback
                continue
            model = entry["model"]
            # Serving: flat for flat, for buy-and-hold (no version to trade) and for a choice not tradeable.
            if model in (FLAT, BUY_AND_HOLD) or not entry.get("tradeable", False) or model not in chosen_versions:
                trade[regime] = FLAT
                details.setdefault("chosen", {})[regime] = model
            else:
                trade[regime] = model
                names[model] = chosen_versions[model]
        trade[OTHERWISE] = fallback
        details["champion"] = label(champion) if champion else None
        details["selection"] = {r: c["model"] for r, c in choice.items()}
        out.append(StepDecision(trade, names, str(action), "; ".join(notes + [reason]), details))
    return out


def newest_decisions(walk: Walk, model_type: str) -> list[StepDecision]:
    """FreqAI's behaviour: always the most recently trained version of `model_type`, in every regime."""
    out, latest = [], None
    for step in walk.steps:
        latest = walk.by_step[step.index].get(model_type, latest)
        if latest is None:
            out.append(StepDecision({OTHERWISE: FLAT_POLICY}, {}, str(Action.NONE), f"no {model_type} version yet"))
            continue
        out.append(StepDecision({OTHERWISE: model_type}, {model_type: latest}, str(Action.NONE),
                                f"newest {label(latest)} (as of {latest.as_of})"))
    return out


def best_composite_decisions(walk: Walk) -> list[StepDecision]:
    """The step's version with the highest walk-forward composite score, in every regime: no deflation,
    no flat option (the original Brain Library's "automatically selects the best model")."""
    out, last = [], None
    for step in walk.steps:
        if walk.by_step[step.index]:
            score, best, _ = walk.ranking(step.index)[0]
            last = StepDecision({OTHERWISE: best.model_type}, {best.model_type: best}, str(Action.NONE),
                                f"{label(best)} has the highest walk-forward composite ({score:.3f})")
        out.append(last or StepDecision({OTHERWISE: FLAT_POLICY}, {}, str(Action.NONE), "no version yet"))
    return out


def constant_decisions(walk: Walk, name: str) -> list[StepDecision]:
    why = "never holds a position" if name == FLAT_POLICY else "long on every bar"
    return [StepDecision({OTHERWISE: name}, {}, str(Action.NONE), why) for _ in walk.steps]


# --- trading -------------------------------------------------------------------------------------

@dataclass
class Market:
    """The bars a symbol's policies trade: bar returns, regimes and the feature rows, indexed by ts."""

    bar: pd.Series
    regimes: pd.Series
    X: pd.DataFrame
    step_of_bar: np.ndarray
    cost_bps: float
    threshold: float | None
    _models: dict[tuple[str, int], Any] = field(default_factory=dict)
    _preds: dict[tuple[str, int, int], np.ndarray] = field(default_factory=dict)
    reads: Reads | None = None  # where models come from (the walk's, which holds the ones it decided with)

    def predictions(self, engine: sa.Engine, version: ModelManifest, k: int) -> np.ndarray:
        """`version`'s predictions on the bars of step k (index k - 1 in `step_of_bar`)."""
        key = (*_key(version), k)
        if key not in self._preds:
            rows = self.X[self.step_of_bar == k - 1]
            if _key(version) not in self._models:
                self._models[_key(version)] = self.reads.model(version) if self.reads is not None \
                    else load_version(engine, version)
            pred = self._models[_key(version)].predict(rows.reindex(columns=list(version.feature_names))) \
                if len(rows) else np.empty(0)
            self._preds[key] = np.asarray(pred, dtype="float64").ravel()
        return self._preds[key]


def load_bars(engine: sa.Engine, settings: Settings, plan: ReplayPlan, symbol: str, config: Any,
              reads: Reads | None = None) -> Market:
    """The bars the policies trade, from the Brain or from `reads` (the walk's: the same bars, and the
    history build its training sets were cut from)."""
    from brain_tasks.ml.pipeline import build_dataset
    from brain_tasks.ml.regimes import volatility_regimes
    from brain_tasks.ml.replay import _step_of_bar  # noqa: PLC2701 - the same assignment of bars to steps

    reads = reads or Reads(engine, settings)
    market = reads.market(symbol, end=plan.window_end)
    config = dataclasses.replace(config, min_rows=1)
    built = reads.window_dataset(symbol, config, None, plan.window_end)
    X, _y, bar = built if built is not None else build_dataset(market["candles"], config, **market_kwargs(market))
    steps = plan.steps
    keep = (X.index > pd.Timestamp(steps[0].decided)) & (X.index <= pd.Timestamp(plan.window_end))
    X, bar = X[keep], bar[keep]
    regimes = volatility_regimes(market["candles"], window=config.regime_window, lookback=config.regime_lookback)
    regimes = regimes.reindex(X.index)
    step_of_bar = _step_of_bar(pd.DatetimeIndex(X.index), [s.decided for s in steps])
    return Market(bar.astype("float64"), regimes, X, step_of_bar, float(config.cost_bps), config.threshold,
                  reads=reads)


def trade(engine: sa.Engine, market: Market, steps: Sequence[Step], decided: Sequence[StepDecision]) -> pd.DataFrame:
    """`ml.replay.trade_policy` of one policy's step decisions: per name, the predictions of the version it
    means at each step, on that step's bars."""
    from brain_tasks.ml.replay import trade_policy

    names = {n for d in decided for n in d.versions}
    preds = {n: np.full(len(market.bar), np.nan) for n in names}
    for step, d in zip(steps, decided):
        at = market.step_of_bar == step.index - 1
        for name, version in d.versions.items():
            if version is not None and at.any():
                preds[name][at] = market.predictions(engine, version, step.index)
    return trade_policy(market.bar, market.regimes.to_numpy(dtype=object), preds, [d.trade for d in decided],
                        [s.decided for s in steps], market.cost_bps, market.threshold)


# --- one symbol ----------------------------------------------------------------------------------

def _trainings(trained: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """The trainings' outcomes by (model type, as-of day), as the canvas delivers them: the group's list
    with one list per model type (each training of a model type's chain passes the outcomes before it
    along), a single model type's list, or one outcome."""
    found: dict[tuple[str, str], dict[str, Any]] = {}

    def visit(item: Any) -> None:
        if isinstance(item, Mapping):
            found[(str(item.get("model_type")), str(item.get("as_of")))] = dict(item)
        elif isinstance(item, list):
            for inner in item:
                visit(inner)

    visit(trained)
    return found


def _inputs_digest(engine: sa.Engine, settings: Settings, plan: ReplayPlan, symbol: str,
                   by_step: dict[int, dict[str, ModelManifest]]) -> str:
    """What the walk reads: every step's versions (and their artifacts) and the stored bars up to the
    window's end (their number and the newest), digested."""
    import hashlib
    import json

    versions = {k: {m: [v.version, v.artifact_sha256] for m, v in sorted(vs.items())} for k, vs in by_step.items()}
    bars = replays.bar_count(engine, settings.exchange, symbol, settings.timeframe, plan.window_end)
    payload = json.dumps({"versions": versions, "bars": bars, "policies": plan.policies}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def walk_symbol(engine: sa.Engine, settings: Settings, plan: ReplayPlan, symbol: str, trained: Any) -> ChainState:
    """Decide and trade every policy of the replay for `symbol`; write its decisions and per-policy
    results (`brain.replays`).  Returns the symbol's chain state: succeeded, or skipped with the reason
    (no version could be trained before t_1: too little history), or failed."""
    from brain_tasks.ml.metrics import bars_per_year
    from brain_tasks.ml.pipeline import TrainConfig
    from brain_tasks.ml.replay import pack_returns, policy_table

    cpu0 = time.process_time()
    state = ChainState.start(symbol, plan.end)
    outcomes = _trainings(trained)
    steps = plan.steps
    by_step: dict[int, dict[str, ModelManifest]] = {}
    reused: dict[int, bool] = {}
    errors = []
    for s in steps:
        found = {}
        for m in plan.models:
            o = outcomes.get((m, s.as_of.isoformat()))
            if o is None:
                # Every training's outcome travels along its model type's chain, so this one's result was
                # lost (the broker's result store, or a message sent before the chains): the version trained
                # for exactly this identity is the truth.  (A training that reused an earlier day's version
                # has no version of its own day; its step then reads as no version.)
                v = registry.find_version(engine, symbol, m, s.as_of, plan.config_hash)
                o = {"status": Status.OK, "version": v.version} if v is not None else {"status": Status.FAILED,
                                                                                        "error": "no result"}
            if o.get("status") == Status.OK and o.get("version") is not None:
                found[m] = registry.manifest(engine, symbol, m, int(o["version"]))
            else:
                errors.append(f"{m} as of {s.as_of}: {o.get('error') or o.get('status')}")
        by_step[s.index] = found
        previous = by_step.get(s.index - 1)
        reused[s.index] = bool(found) and previous is not None and \
            {m: _key(v) for m, v in found.items()} == {m: _key(v) for m, v in previous.items()}
    if not by_step[1]:
        why = "; ".join(errors[:len(plan.models)]) or "no version trained"
        return state.update(status=Status.SKIPPED, reason=f"too little history before t_1 to train on: {why}",
                            replay={"skipped": True, "errors": errors[:5]})
    trained_here = [o for o in outcomes.values() if o.get("trained")]
    train_cpu = sum(float(o.get("cpu_s") or 0.0) for o in trained_here)

    def cost(**more: Any) -> dict[str, Any]:
        return {"cpu_s": round(time.process_time() - cpu0, 4), "train_cpu_s": round(train_cpu, 4),
                "n_trained": len(trained_here), **more}

    inputs = _inputs_digest(engine, settings, plan, symbol, by_step)
    previous = ((replays.get_replay(engine, plan.replay_id) or {}).get("summary") or {}).get("symbols", {}).get(symbol)
    stored = replays.result_inputs(engine, plan.replay_id, symbol)
    if previous and previous.get("state") == Status.OK and set(stored) >= set(plan.policies) \
            and all(stored[p] == inputs for p in plan.policies):
        # The same versions on the same bars: the stored decisions and results are this walk's.
        kept = {k: v for k, v in previous.items() if k != "state"}
        return state.update(replay=kept, replay_run=cost(reused=True))
    walk = Walk(engine, settings, symbol, steps, by_step, reused, plan.window_end)
    decided: dict[str, list[StepDecision]] = {}
    for name, overrides in plan.variants:
        decided[name] = brain_decisions(walk, dataclasses.replace(settings, **overrides))
    for m in plan.models:
        decided[NEWEST + m] = newest_decisions(walk, m)
    decided[BEST_COMPOSITE] = best_composite_decisions(walk)
    decided[FLAT_POLICY] = constant_decisions(walk, FLAT_POLICY)
    decided[BUY_AND_HOLD_POLICY] = constant_decisions(walk, BUY_AND_HOLD_POLICY)
    decide_cpu = time.process_time() - cpu0

    config = TrainConfig.from_dict(next(iter(by_step[1].values())).config)
    market = load_bars(engine, settings, plan, symbol, config, walk.reads)
    trades = {name: trade(engine, market, steps, d) for name, d in decided.items()}
    ppy = bars_per_year(settings.timeframe)
    table = policy_table(trades, ppy) if len(market.bar) else {"policies": {}, "n_bars": 0, "dsr": None, "pbo": None}
    bar_len = pd.Timedelta(seconds=timeframe_seconds(settings.timeframe))
    replays.write_decisions(engine, [
        dict(replay_id=plan.replay_id, symbol=symbol, step=s.index, policy=name, as_of=s.as_of, step_end=s.decided,
             choices={r: {"model_type": d.versions[n].model_type if d.versions.get(n) is not None else n,
                          "version": int(d.versions[n].version) if d.versions.get(n) is not None else None}
                      for r, n in d.trade.items()},
             action=d.action, reason=d.reason[:2000], details=d.details)
        for name, ds in decided.items() for s, d in zip(steps, ds)])
    replays.write_results(engine, [
        dict(replay_id=plan.replay_id, symbol=symbol, policy=name, metrics=table["policies"].get(name, {}),
             n_bars=len(t), inputs=inputs, returns=pack_returns(t["net_return"], bar=bar_len),
             positions=pack_returns(t["position"].astype("float64"), bar=bar_len))
        for name, t in trades.items()])
    brain = decided[plan.variants[0][0]]
    summary = {"n_bars": int(table["n_bars"]), "dsr": table.get("dsr"), "pbo": table.get("pbo"),
               "actions": {a: sum(d.action == a for d in brain) for a in sorted({d.action for d in brain})},
               "errors": errors[:5]}
    return state.update(replay=summary, replay_run=cost(decide_cpu_s=round(decide_cpu, 4), reused=False))
