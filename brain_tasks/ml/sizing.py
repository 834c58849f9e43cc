"""Position sizing by reinforcement learning, judged only against the sizing a quant uses without it.

The agent reads the chosen supervised model's *out-of-sample* predictions (a version's stored OOS
frame: ts, fold, pred, label, bar_return, strategy_return, regime) and picks a target position from a
small discrete set each bar.  Nested walk-forward: it is trained on the first bars of that frame and
judged on the later ones, with a purge (a training bar's reward is only known ``delay`` bars later) and
an embargo between them, so every bar it is scored on was out of sample for both models.

It is compared on its test bars with (a) sign sizing of the prediction at full size and (b) sign
sizing scaled to a volatility target.  It sizes only if its Sharpe ratio beats both with a one-sided
HAC (prewhitened Newey-West) test of the Sharpe difference (Ledoit & Wolf 2008) at ``alpha``; both must pass
(an intersection-union test, so no multiplicity correction), otherwise the better baseline sizes and
the stored reason says so.

PPO (stable-baselines3, the field's standard, as in FreqAI) trains it, seeded, on CPU, one torch
thread.  The exported policy is the actor network only: weights in safetensors with the JSON config in
the file's metadata (never SB3's zip, which pickles).  Serving rebuilds the network in numpy from those
two (`Sizer.from_bytes`, `size_for`): no torch or stable-baselines3 at inference.  This module is pure:
no Celery, no SQL.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pandas as pd
from scipy import stats

from brain_tasks.errors import DataError
from brain_tasks.ml.metrics import (
    bars_per_year,
    composite_score,
    probabilistic_sharpe_ratio,
    strategy_metrics,
)
from brain_tasks.ml.regimes import REGIMES
from brain_tasks.ml.sharpe import SharpeDifference, sharpe_difference_test

AGENT, SIGN, VOL_TARGET = "ppo_sizer", "sign_sizing", "vol_target_sizing"
SIZERS = (AGENT, SIGN, VOL_TARGET)
BASELINES = (SIGN, VOL_TARGET)
ARTIFACT_FORMAT = "sizer-safetensors"
FORMAT_VERSION = 1
OBS_NAMES = ("pred", "hit_rate", "log_vol", *(f"regime_{r}" for r in REGIMES), "position", "drawdown")
_STATIC = len(OBS_NAMES) - 2  # everything but the agent's own position and drawdown
OOS_COLUMNS = ("ts", "pred", "bar_return", "regime")


@dataclass(frozen=True)
class SizerConfig:
    """Everything that changes a trained sizer; its hash is part of the sizer version's identity.

    ``delay`` is how many bars after a decision its bar's return is known (execution lag + 1): the
    hit rate and realised volatility an observation shows end that many bars back, and ``delay`` rows
    are purged between training and test bars (a training reward must not be paid by a test bar);
    ``embargo`` rows more (default: the supervised label's span) keep serial dependence out too.
    """

    timeframe: str = "5m"
    cost_bps: float = 5.0
    allow_short: bool = True
    actions: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)
    delay: int = 2
    embargo: int = 13
    train_fraction: float = 0.6
    min_train_bars: int = 500
    min_test_bars: int = 300
    hit_window: int = 48
    vol_window: int = 48
    # reward = r + risk_weight * risk, r = the bar's net return in units of the training bars' return
    # std; risk = -r**2 (mean-variance, default) or the differential Sharpe ratio (Moody & Saffell
    # 1998; moving moments at rate dsr_eta).  Measured on the planted market (tests/ml/test_sizing.py):
    # with "dsr" the agent stayed at full size where the prediction was noise (the DSR's variance term is
    # weighted by the running mean return, near zero for a thin edge), with "variance" it went flat there.
    # The weight is a hurdle: holding size s pays only where the bar's expected return, in units of the
    # training return std, exceeds about risk_weight * s (0.1 for half size at 0.2): only strong edges
    # trade.  At 0.05 the planted test still passed, but on pure noise the agent held a third of full
    # size on average (and lost the costs).
    risk_weight: float = 0.2
    risk_term: str = "variance"
    dsr_eta: float = 0.02
    episode_length: int = 512
    total_timesteps: int = 16_384
    n_envs: int = 8                 # one batched forward pass per step of 8 episodes: ~5x faster rollouts
    n_steps: int = 256              # per env: 2048 transitions per update
    batch_size: int = 256
    n_epochs: int = 10
    learning_rate: float = 1e-3
    # Short horizon: a bar's reward is mostly noise, and discounting far rewards in lets the noise of
    # later bars swamp the credit of this one; a position change's cost still shows in the next bars.
    gamma: float = 0.3
    gae_lambda: float = 0.9
    ent_coef: float = 0.01
    hidden: tuple[int, ...] = (32, 32)
    seed: int = 0
    alpha: float = 0.05

    def __post_init__(self) -> None:
        for name in ("actions", "hidden"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not 0.0 < self.train_fraction < 1.0:
            raise ValueError("train_fraction must be in (0, 1)")
        if self.delay < 1 or self.embargo < 0 or self.hit_window < 2 or self.vol_window < 2:
            raise ValueError("need delay >= 1, embargo >= 0, hit_window >= 2, vol_window >= 2")
        if not self.allowed_actions:
            raise ValueError("no action left once short positions are removed")
        if any(abs(a) > 1 for a in self.actions):
            raise ValueError("actions are fractions of full size, within [-1, 1]")
        if self.risk_term not in ("variance", "dsr"):
            raise ValueError("risk_term must be 'variance' or 'dsr'")
        if self.cost_bps < 0 or self.risk_weight < 0:
            raise ValueError("cost_bps and risk_weight must be >= 0")

    @property
    def allowed_actions(self) -> tuple[float, ...]:
        """The action set, without short positions when ``allow_short`` is off (spot markets)."""
        return tuple(float(a) for a in self.actions if self.allow_short or a >= 0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["actions"], d["hidden"] = list(self.actions), list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SizerConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown SizerConfig fields {sorted(unknown)}")
        return cls(**dict(data))

    def config_hash(self) -> str:
        payload = json.dumps({"sizer": self.to_dict(), "format": FORMAT_VERSION}, sort_keys=True,
                             separators=(",", ":"))
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# --- inputs ----------------------------------------------------------------------------------------

def prepare(oos: pd.DataFrame) -> pd.DataFrame:
    """The OOS frame's bars in time order, with the columns the sizer reads, checked."""
    missing = [c for c in OOS_COLUMNS if c not in oos.columns]
    if missing:
        raise DataError(f"out-of-sample frame lacks columns {missing}")
    frame = oos.loc[:, list(OOS_COLUMNS)].copy()
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
    for col in ("pred", "bar_return"):
        frame[col] = frame[col].astype("float64")
        if not np.isfinite(frame[col].to_numpy()).all():
            raise DataError(f"out-of-sample {col} has NaN or infinite values")
    frame["regime"] = frame["regime"].astype(str)
    return frame


def frame_digest(oos: pd.DataFrame) -> str:
    """sha256 of what the sizer learns from: the bars' times, predictions, returns and regimes."""
    frame = prepare(oos)
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(pd.DatetimeIndex(frame["ts"]).as_unit("ns").asi8).tobytes())
    h.update(np.ascontiguousarray(frame[["pred", "bar_return"]].to_numpy("float64")).tobytes())
    h.update("\n".join(frame["regime"]).encode("utf-8"))
    return h.hexdigest()


def rolling_inputs(pred: np.ndarray, bar_return: np.ndarray, delay: int, hit_window: int,
                   vol_window: int) -> tuple[np.ndarray, np.ndarray]:
    """(hit rate, realised volatility) known at each bar's decision: both end ``delay`` bars back.

    A hit is a bar whose return had the prediction's sign (a zero prediction or return counts half).
    Warm-up bars are NaN.
    """
    agree = np.sign(pred) * np.sign(bar_return)
    hit = pd.Series(np.where(agree > 0, 1.0, np.where(agree < 0, 0.0, 0.5)))
    r = pd.Series(bar_return)
    hit_rate = hit.rolling(hit_window, min_periods=hit_window).mean().shift(delay).to_numpy()
    vol = r.rolling(vol_window, min_periods=vol_window).std().shift(delay).to_numpy()
    return hit_rate, vol


@dataclass(frozen=True)
class Scales:
    """Normalisation fitted on the agent's training bars only (stored with the policy)."""

    pred_scale: float
    vol_ref: float      # median realised volatility: the volatility target of vol-target sizing too
    ret_scale: float    # std of a bar's return: the reward's unit
    dd_scale: float     # typical drawdown of an episode: ret_scale * sqrt(episode_length)

    @classmethod
    def fit(cls, pred: np.ndarray, bar_return: np.ndarray, vol: np.ndarray, episode_length: int) -> Scales:
        def positive(x: float, fallback: float) -> float:
            return float(x) if math.isfinite(x) and x > 0 else fallback

        ret_scale = positive(float(np.std(bar_return)), 1e-4)
        return cls(pred_scale=positive(float(np.std(pred)), 1.0),
                   vol_ref=positive(float(np.nanmedian(vol)) if np.isfinite(vol).any() else math.nan, ret_scale),
                   ret_scale=ret_scale, dd_scale=ret_scale * math.sqrt(episode_length))


def static_features(pred: np.ndarray, hit_rate: np.ndarray, vol: np.ndarray, regime: Sequence[str],
                    scales: Scales) -> np.ndarray:
    """The observation's columns that do not depend on the agent's own book, float32 (n, 7)."""
    z = np.clip(np.asarray(pred, "float64") / scales.pred_scale, -5.0, 5.0)
    hr = np.where(np.isfinite(hit_rate), 2.0 * np.asarray(hit_rate, "float64") - 1.0, 0.0)
    v = np.where(np.isfinite(vol) & (vol > 0), vol, scales.vol_ref)
    log_vol = np.clip(np.log(v / scales.vol_ref), -3.0, 3.0)
    reg = np.asarray(regime, dtype=object)
    onehot = np.stack([(reg == r).astype("float64") for r in REGIMES], axis=1)  # unknown regime: all zero
    return np.column_stack([z, hr, log_vol, onehot]).astype(np.float32)


# --- the book: position, equity, drawdown, differential Sharpe -------------------------------------

class Book:
    """The agent's own state along a run of bars: position, equity, drawdown and the moving moments
    of the differential Sharpe ratio."""

    def __init__(self, cost_bps: float, scales: Scales, eta: float) -> None:
        self.cost, self.scales, self.eta = cost_bps / 1e4, scales, eta
        self.position, self.equity, self.peak = 0.0, 1.0, 1.0
        self.a, self.b = 0.0, 1.0  # moments of the normalised return; b starts at its unit variance

    @property
    def drawdown(self) -> float:
        return self.equity / self.peak - 1.0

    def observe(self, static: np.ndarray) -> np.ndarray:
        dd = max(self.drawdown / self.scales.dd_scale, -5.0)
        return np.concatenate([static, np.asarray([self.position, dd], np.float32)]).astype(np.float32)

    def trade(self, target: float, bar_return: float) -> tuple[float, float]:
        """Move to `target`, hold it over the bar: (net return, differential Sharpe of this bar)."""
        net = target * bar_return - self.cost * abs(target - self.position)
        self.position = target
        self.equity *= 1.0 + net
        self.peak = max(self.peak, self.equity)
        r = net / self.scales.ret_scale
        da, db = r - self.a, r * r - self.b
        denom = (self.b - self.a * self.a) ** 1.5
        dsr = (self.b * da - 0.5 * self.a * db) / denom if denom > 1e-12 else 0.0
        self.a += self.eta * da
        self.b += self.eta * db
        return net, float(np.clip(dsr, -10.0, 10.0))


class SizingEnv(gym.Env):
    """Steps through a symbol's bars; an episode is ``episode_length`` consecutive bars from a random
    start (or the whole series from its first bar when ``episode_length`` is None).

    Observation: the model's prediction (scaled), its recent hit rate, realised volatility, regime
    (one-hot), the agent's position and drawdown.  Action: an index into ``config.allowed_actions``.
    Reward: the bar's net return in units of the training return std, plus ``risk_weight`` times the
    risk term (minus its square, or the differential Sharpe ratio).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, static: np.ndarray, bar_return: np.ndarray, config: SizerConfig, scales: Scales,
                 episode_length: int | None = None) -> None:
        super().__init__()
        if len(static) != len(bar_return) or len(static) < 2:
            raise ValueError("static features and bar returns must have the same length (>= 2)")
        self.static, self.bar_return = np.asarray(static, np.float32), np.asarray(bar_return, "float64")
        self.config, self.scales = config, scales
        self.actions = np.asarray(config.allowed_actions, "float64")
        self.length = min(episode_length or len(static), len(static))
        self.observation_space = gym.spaces.Box(-10.0, 10.0, shape=(len(OBS_NAMES),), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(len(self.actions))
        self.t = self.end = 0
        self.book = Book(config.cost_bps, scales, config.dsr_eta)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        last_start = len(self.static) - self.length
        self.t = int(self.np_random.integers(0, last_start + 1)) if last_start > 0 else 0
        self.end = self.t + self.length
        self.book = Book(self.config.cost_bps, self.scales, self.config.dsr_eta)
        return self.book.observe(self.static[self.t]), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        net, dsr = self.book.trade(float(self.actions[int(action)]), float(self.bar_return[self.t]))
        r = net / self.scales.ret_scale
        risk = dsr if self.config.risk_term == "dsr" else -r * r
        reward = r + self.config.risk_weight * risk
        self.t += 1
        done = self.t >= self.end
        obs = self.book.observe(self.static[min(self.t, len(self.static) - 1)])
        return obs, float(reward), False, done, {"net_return": net}


# --- the exported policy ---------------------------------------------------------------------------

@dataclass
class Sizer:
    """A sizer as served: the JSON description and (for the agent) the actor network's weights.

    ``active`` names the sizer that sizes the Engine's signals (the gate's outcome), ``reason`` says why.
    """

    description: dict[str, Any]
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def active(self) -> str:
        return str(self.description["active"])

    @property
    def reason(self) -> str:
        return str(self.description.get("reason", ""))

    @property
    def source(self) -> tuple[str, int] | None:
        """(model type, version) of the supervised version whose predictions it was trained on: its
        sizes are meant for that model's predictions."""
        src = self.description.get("source") or {}
        return (str(src["model_type"]), int(src["version"])) if "model_type" in src else None

    @property
    def config(self) -> SizerConfig:
        return SizerConfig.from_dict(self.description["config"])

    @property
    def scales(self) -> Scales:
        return Scales(**self.description["scales"])

    def to_bytes(self) -> bytes:
        from safetensors.numpy import save

        meta = {"brain_sizer": json.dumps(self.description, sort_keys=True, separators=(",", ":"))}
        return save({k: np.ascontiguousarray(v, np.float32) for k, v in sorted(self.weights.items())}, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> Sizer:
        from safetensors.numpy import load

        weights = load(data)
        # The file is an 8-byte little-endian header length, a JSON header (with __metadata__), the tensors.
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
        if "brain_sizer" not in meta:
            raise ValueError("not a brain sizer artifact: no 'brain_sizer' metadata")
        description = json.loads(meta["brain_sizer"])
        if description.get("format") != FORMAT_VERSION:
            raise ValueError(f"sizer format {description.get('format')!r}, expected {FORMAT_VERSION}")
        return cls(description, weights)

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """The actor's action logits for observations (n, len(OBS_NAMES)), rebuilt in numpy."""
        h = np.atleast_2d(np.asarray(obs, np.float32))
        for i in range(len(self.description["hidden"])):
            h = np.tanh(h @ self.weights[f"pi.{i}.weight"].T + self.weights[f"pi.{i}.bias"])
        return h @ self.weights["out.weight"].T + self.weights["out.bias"]

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Indices of the deterministic (most likely) actions."""
        return np.argmax(self.logits(obs), axis=1)

    def vector(self, observation: Mapping[str, Any]) -> np.ndarray:
        """One observation dict (see `size_for`) as the network's input vector."""
        scales = self.scales
        hit, vol = observation.get("hit_rate"), observation.get("realised_vol")
        static = static_features(np.asarray([float(observation["pred"])]),
                                 np.asarray([math.nan if hit is None else float(hit)]),
                                 np.asarray([math.nan if vol is None else float(vol)]),
                                 [str(observation.get("regime"))], scales)[0]
        book = Book(0.0, scales, 0.0)
        book.position = float(observation.get("position") or 0.0)
        book.equity = 1.0 + min(float(observation.get("drawdown") or 0.0), 0.0)
        return book.observe(static)


def size_for(sizer: Sizer, observation: Mapping[str, Any], use: str | None = None) -> float:
    """The target position for one bar, a signed fraction of full size, by the sizer's active rule
    (or by `use`, one of SIZERS).

    `observation`: ``pred`` (the chosen model's prediction, required), ``hit_rate`` (0..1) and
    ``realised_vol`` (per-bar return std) over the recent bars whose returns are known (see
    `latest_observation`), ``regime``, and the Engine's ``position`` and ``drawdown`` (a negative
    fraction of peak equity); missing ones count as unknown / flat / none.
    """
    kind = use or sizer.active
    config = sizer.config
    pred = float(observation["pred"])
    side = float(np.sign(pred)) if math.isfinite(pred) else 0.0
    if side < 0 and not config.allow_short:
        side = 0.0
    if kind == SIGN:
        return side
    if kind == VOL_TARGET:
        vol = observation.get("realised_vol")
        return side * vol_target_scale(None if vol is None else float(vol), sizer.scales.vol_ref)
    if kind == AGENT:
        return float(config.allowed_actions[int(sizer.act(sizer.vector(observation))[0])])
    raise ValueError(f"unknown sizer {kind!r}; one of {SIZERS}")


def vol_target_scale(vol: float | None, target: float) -> float:
    """Full size at or below the volatility target, scaled down above it (never levered up)."""
    if vol is None or not math.isfinite(vol) or vol <= 0:
        return 1.0
    return float(min(1.0, target / vol))


def latest_observation(pred: Sequence[float], bar_return: Sequence[float], regime: str | None, sizer: Sizer, *,
                       position: float = 0.0, drawdown: float = 0.0) -> dict[str, Any]:
    """The observation of the last bar of a recent history, as `size_for` takes it.

    `pred` and `bar_return` are aligned per bar (``bar_return[i]`` is what a position taken at bar i
    earned); the returns of the last ``delay`` bars are not known yet and are ignored (NaN is fine).
    """
    config = sizer.config
    p = np.asarray(pred, "float64")
    r = np.nan_to_num(np.asarray(bar_return, "float64"))  # only the unknown last `delay` may be NaN
    hit, vol = rolling_inputs(p, r, config.delay, config.hit_window, config.vol_window)
    return {"pred": float(p[-1]), "hit_rate": None if np.isnan(hit[-1]) else float(hit[-1]),
            "realised_vol": None if np.isnan(vol[-1]) else float(vol[-1]), "regime": regime,
            "position": position, "drawdown": drawdown}


# --- statistics --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Gate:
    active: str
    reason: str
    tests: dict[str, SharpeDifference]  # per bar (periods_per_year 1); the gate reads p_greater
    vs_flat: SharpeDifference


def gate(returns: Mapping[str, np.ndarray], alpha: float) -> Gate:
    """The agent sizes only if its Sharpe beats both baselines', each significant at `alpha`;
    otherwise the baseline with the higher Sharpe on the same bars sizes."""
    agent = returns[AGENT]
    tests = {b: sharpe_difference_test(agent, returns[b], 1.0) for b in BASELINES}
    vs_flat = sharpe_difference_test(agent, np.zeros_like(agent), 1.0)
    better = max(BASELINES, key=lambda b: (tests[b].sharpe_b, b == VOL_TARGET))
    n = len(agent)

    def said(b: str) -> str:
        t = tests[b]
        return f"{b} (Sharpe/bar {t.sharpe_b:.4f}, p={t.p_greater:.3g})"

    head = f"on {n} test bars the agent's Sharpe/bar is {tests[SIGN].sharpe_a:.4f} vs {said(SIGN)} and {said(VOL_TARGET)}"
    if all(t.diff > 0 and t.p_greater < alpha for t in tests.values()):
        return Gate(AGENT, f"the agent sizes: {head}; both beaten at alpha={alpha}", tests, vs_flat)
    lost = [b for b in BASELINES if not (tests[b].diff > 0 and tests[b].p_greater < alpha)]
    return Gate(better, f"{better} sizes: the agent did not beat {' and '.join(lost)} significantly at "
                f"alpha={alpha}; {head}", tests, vs_flat)


# --- training -------------------------------------------------------------------------------------

@dataclass
class Split:
    """Row ranges of the nested walk-forward: [0, train_end) trains, [test_start, n) tests."""

    train_end: int
    test_start: int
    n: int

    @classmethod
    def of(cls, n: int, config: SizerConfig) -> Split:
        train_end = int(n * config.train_fraction)
        test_start = train_end + config.delay + config.embargo
        if train_end < config.min_train_bars or n - test_start < config.min_test_bars:
            raise DataError(f"{n} out-of-sample bars cannot hold {config.min_train_bars} training bars, a gap of "
                            f"{config.delay + config.embargo} and {config.min_test_bars} test bars")
        return cls(train_end, test_start, n)


def fit_ppo(static: np.ndarray, bar_return: np.ndarray, config: SizerConfig, scales: Scales) -> Any:
    """PPO on the training bars: seeded, CPU, one torch thread (restored afterwards)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        episode = min(config.episode_length, len(static) - 1)
        env = DummyVecEnv([lambda: SizingEnv(static, bar_return, config, scales, episode)
                           for _ in range(config.n_envs)])
        model = PPO("MlpPolicy", env, learning_rate=config.learning_rate, n_steps=config.n_steps,
                    batch_size=config.batch_size, n_epochs=config.n_epochs, gamma=config.gamma,
                    gae_lambda=config.gae_lambda, ent_coef=config.ent_coef, seed=config.seed, device="cpu",
                    policy_kwargs={"net_arch": {"pi": list(config.hidden), "vf": list(config.hidden)},
                                   "activation_fn": torch.nn.Tanh}, verbose=0)
        model.learn(total_timesteps=config.total_timesteps)
        return model
    finally:
        torch.set_num_threads(threads)


def export_weights(model: Any, config: SizerConfig) -> dict[str, np.ndarray]:
    """The actor network's weights (the value network is only needed to train) as float32 arrays."""
    state = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.policy.state_dict().items()}
    out = {}
    for i in range(len(config.hidden)):
        # SB3's policy_net is Sequential(Linear, Tanh, Linear, Tanh, ...): Linear layers at even indices.
        out[f"pi.{i}.weight"] = state[f"mlp_extractor.policy_net.{2 * i}.weight"]
        out[f"pi.{i}.bias"] = state[f"mlp_extractor.policy_net.{2 * i}.bias"]
    out["out.weight"], out["out.bias"] = state["action_net.weight"], state["action_net.bias"]
    return out


def run_policy(decide: Callable[[np.ndarray], float], static: np.ndarray, bar_return: np.ndarray,
               config: SizerConfig, scales: Scales) -> tuple[np.ndarray, np.ndarray]:
    """(positions, net returns) of a sizer run once through the bars from flat, in order."""
    book = Book(config.cost_bps, scales, config.dsr_eta)
    pos, ret = np.zeros(len(static)), np.zeros(len(static))
    for t in range(len(static)):
        pos[t] = decide(book.observe(static[t]))
        ret[t], _ = book.trade(pos[t], float(bar_return[t]))
    return pos, ret


def baseline_positions(kind: str, pred: np.ndarray, vol: np.ndarray, config: SizerConfig,
                       scales: Scales) -> np.ndarray:
    side = np.sign(pred)
    if not config.allow_short:
        side = np.maximum(side, 0.0)
    if kind == SIGN:
        return side
    return side * np.asarray([vol_target_scale(v, scales.vol_ref) for v in vol])


def net_returns(pos: np.ndarray, bar_return: np.ndarray, cost_bps: float) -> np.ndarray:
    """Position times the bar's return minus the cost of turnover, starting flat."""
    return pos * bar_return - np.abs(np.diff(pos, prepend=0.0)) * cost_bps / 1e4


@dataclass
class SizerResult:
    """A trained, judged sizer, in the shape `brain.registry.register_version` stores.

    ``oos`` holds the test bars with the three sizers' positions and returns (``strategy_return``
    is the agent's, so the report draws its equity curve like any model's).
    """

    sizer: Sizer
    gate: Gate
    oos: pd.DataFrame
    metrics: dict[str, float]
    regime_metrics: dict[str, dict[str, float]]
    sizer_metrics: dict[str, dict[str, float]]
    artifact: bytes
    dataset_digest: str
    data_start: pd.Timestamp
    data_end: pd.Timestamp
    n_rows: int
    params: dict[str, Any]
    split: Split
    artifact_format: str = ARTIFACT_FORMAT
    feature_names: list[str] = field(default_factory=lambda: list(OBS_NAMES))
    feature_hash: str = hashlib.sha256(json.dumps(list(OBS_NAMES)).encode()).hexdigest()
    importance: None = None


def _metrics(r: np.ndarray, ppy: float) -> dict[str, float]:
    out = strategy_metrics(r, ppy)
    out["psr"] = probabilistic_sharpe_ratio(r)
    out["composite"] = composite_score(out)
    return out


def train_sizer(oos: pd.DataFrame, config: SizerConfig, source: Mapping[str, Any] | None = None) -> SizerResult:
    """Train the agent on the first bars of a supervised version's OOS frame, judge it and the two
    baselines on the later bars, and export it with the gate's decision.  `source` (e.g. the
    supervised version's model type and version) is recorded in the description."""
    frame = prepare(oos)
    split = Split.of(len(frame), config)
    pred, r = frame["pred"].to_numpy(), frame["bar_return"].to_numpy()
    hit, vol = rolling_inputs(pred, r, config.delay, config.hit_window, config.vol_window)
    tr = slice(0, split.train_end)
    scales = Scales.fit(pred[tr], r[tr], vol[tr], config.episode_length)
    static = static_features(pred, hit, vol, frame["regime"].to_numpy(), scales)
    model = fit_ppo(static[tr], r[tr], config, scales)
    description = {"format": FORMAT_VERSION, "kind": AGENT, "config": config.to_dict(), "scales": asdict(scales),
                   "obs_names": list(OBS_NAMES), "actions": list(config.allowed_actions), "hidden": list(config.hidden),
                   "activation": "tanh", "source": dict(source or {}), "active": AGENT, "reason": ""}
    sizer = Sizer(description, export_weights(model, config))

    te = slice(split.test_start, split.n)
    actions = config.allowed_actions
    agent_pos, agent_r = run_policy(lambda o: actions[int(sizer.act(o)[0])], static[te], r[te], config, scales)
    positions = {AGENT: agent_pos, **{b: baseline_positions(b, pred[te], vol[te], config, scales) for b in BASELINES}}
    returns = {AGENT: agent_r, **{b: net_returns(positions[b], r[te], config.cost_bps) for b in BASELINES}}
    verdict = gate(returns, config.alpha)
    sizer.description.update(active=verdict.active, reason=verdict.reason,
                             test_start=frame["ts"].iloc[split.test_start].isoformat())

    ppy = bars_per_year(config.timeframe)
    sizer_metrics = {k: _metrics(v, ppy) for k, v in returns.items()}
    regime = frame["regime"].to_numpy()[te]
    regime_metrics = {g: {**_metrics(agent_r[regime == g], ppy),
                          "mean_abs_position": float(np.abs(agent_pos[regime == g]).mean())}
                      for g in REGIMES if (regime == g).any()}
    metrics = {**sizer_metrics[AGENT], "mean_abs_position": float(np.abs(agent_pos).mean()),
               "n_train_bars": float(split.train_end), "n_test_bars": float(split.n - split.test_start),
               "p_vs_sign": verdict.tests[SIGN].p_greater, "p_vs_vol_target": verdict.tests[VOL_TARGET].p_greater,
               "p_vs_flat": verdict.vs_flat.p_greater, "agent_sizes": float(verdict.active == AGENT)}
    test = frame.iloc[te].reset_index(drop=True)
    out = pd.DataFrame({"ts": test["ts"], "fold": 0, "pred": test["pred"], "bar_return": test["bar_return"],
                        "regime": test["regime"], "position": agent_pos, "strategy_return": agent_r,
                        "sign_position": positions[SIGN], "sign_return": returns[SIGN],
                        "vol_target_position": positions[VOL_TARGET], "vol_target_return": returns[VOL_TARGET]})
    return SizerResult(sizer=sizer, gate=verdict, oos=out, metrics=metrics, regime_metrics=regime_metrics,
                       sizer_metrics=sizer_metrics, artifact=sizer.to_bytes(), dataset_digest=frame_digest(oos),
                       data_start=frame["ts"].iloc[0], data_end=frame["ts"].iloc[-1], n_rows=len(frame),
                       params=config.to_dict(), split=split)
