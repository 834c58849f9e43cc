"""Sequence models over windows of the last L bars (PyTorch): ``lstm``, ``cnn``, ``transformer``.

- ``lstm``: a linear input projection, an LSTM, and a learned attention pooling over its outputs
  (Qlib's ALSTM shape: the attention-weighted sum next to the last step feed a linear head).
- ``cnn``: causal dilated 1-D convolutions (TCN): kernel 2, dilations 1, 2, 4, ... until the receptive
  field covers the window; residual blocks; the last step feeds the head.
- ``transformer``: a pre-norm Transformer encoder over the window with sinusoidal positional encoding
  (no causal mask: every position in a window is already in the past); a linear head reads all
  positions.

The contract shared with the tabular models (``brain_tasks.ml.models``): ``predict(X)`` returns one
prediction per row of X, and row i uses rows ``i - context_rows .. i`` of X only (``context_rows =
window - 1``; rows before the first row of X count as the training means, i.e. zeros once scaled).
So to predict rows a..b with full windows, pass ``X.iloc[a - context_rows : b + 1]`` and keep the last
``b - a + 1`` predictions; a caller serving the latest bar passes at least the last ``window`` rows of
the feature frame.  Rows of X are consecutive bars in time order.

Training (``fit_sequence``) never sees the test block; inside the training rows it holds out the last
``val_fraction`` as a validation block for early stopping, after a purge of ``purge`` rows (the label
span plus the embargo) so no training label overlaps it.  Scaling statistics (feature means and
standard deviations, the label's mean and scale) come from the rows before that purge only.  Missing
values become the training mean (zero once scaled); scaled values are clipped to +-``CLIP`` sd so one
extreme bar cannot saturate the network.

Reproducible: ``torch.manual_seed``, deterministic algorithms, ``n_threads`` torch threads (one per
worker process), batch order from a seeded numpy generator: two trainings on the CPU give
byte-identical weights.  On CUDA the same code runs, without the byte-identity promise.

Artifact (format ``safetensors``): one safetensors file whose header metadata holds the JSON
description (architecture, hyperparameters, window, feature names, scaling, training history) under
the key ``brain_tasks``; the weights are its tensors.  No pickle, no ``torch.save``.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn
from torch.nn import functional as F

from brain_tasks.errors import DataError

SEQUENCE_TYPES = ("lstm", "cnn", "transformer")
ARTIFACT_FORMAT = "safetensors"
METADATA_KEY = "brain_tasks"
CLIP = 10.0
PREDICT_BATCH = 2048
# Expected gradients (shap's GradientExplainer): windows explained, background windows, samples each.
SHAP_ROWS = 200
SHAP_BACKGROUND = 100
SHAP_SAMPLES = 50


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is an error."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {requested!r}")
    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise RuntimeError("BRAIN_DEVICE=cuda but torch sees no CUDA device (or this torch build has no CUDA)")
    return "cpu"


@contextmanager
def _torch_session(seed: int, n_threads: int) -> Iterator[None]:
    """Seeded, deterministic, ``n_threads`` threads; the process's previous settings are restored."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(n_threads)
    # warn_only: on CUDA a few kernels have no deterministic version; on the CPU every one used here has.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


# --- networks --------------------------------------------------------------------------------------


class LSTMAttention(nn.Module):
    """Input projection, LSTM, attention pooling over its outputs, linear head on [pooled, last]."""

    def __init__(self, n_features: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        # A linear input projection first: measured on noisy planted patterns, the LSTM learned them in
        # a few epochs with it and stalled on a long plateau without it.
        self.embed = nn.Linear(n_features, hidden)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.attention = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embed(x))  # (batch, window, hidden)
        weights = torch.softmax(self.attention(h), dim=1)
        pooled = (weights * h).sum(dim=1)
        return self.head(torch.cat([pooled, h[:, -1]], dim=1)).squeeze(-1)


class _CausalBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.pad = dilation  # kernel 2: (kernel - 1) * dilation zeros on the left keep it causal
        self.conv = nn.Conv1d(c_in, c_out, kernel_size=2, dilation=dilation)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv1d(c_in, c_out, kernel_size=1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.drop(F.relu(self.conv(F.pad(x, (self.pad, 0))))) + self.skip(x))


def tcn_levels(window: int) -> int:
    """Dilated kernel-2 levels whose receptive field (2 ** levels bars) covers the window."""
    return max(1, math.ceil(math.log2(max(window, 2))))


class TemporalCNN(nn.Module):
    """Residual causal dilated convolutions; the last step's channels feed a linear head."""

    def __init__(self, n_features: int, hidden: int, window: int, dropout: float) -> None:
        super().__init__()
        blocks = [_CausalBlock(n_features if i == 0 else hidden, hidden, 2**i, dropout)
                  for i in range(tcn_levels(window))]
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.blocks(x.transpose(1, 2))  # (batch, channels, window)
        return self.head(z[:, :, -1]).squeeze(-1)


def _sinusoid(length: int, d_model: int) -> torch.Tensor:
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model)
    pe[:, 0::2] = torch.sin(position * freq)
    pe[:, 1::2] = torch.cos(position * freq[: d_model // 2])
    return pe


class TransformerRegressor(nn.Module):
    """Linear embedding + positional encoding, pre-norm encoder, linear head on all positions."""

    def __init__(self, n_features: int, hidden: int, layers: int, heads: int, window: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Linear(n_features, hidden)
        # Recomputed from the window, so not part of the stored weights.
        self.register_buffer("position", _sinusoid(window, hidden), persistent=False)
        layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=2 * hidden, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(hidden), enable_nested_tensor=False)
        # The head reads every position (flattened): read from the last position only, the encoder
        # first has to learn position-specific attention, a long plateau on noisy returns.
        self.head = nn.Linear(window * hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(self.embed(x) + self.position)
        return self.head(z.flatten(1)).squeeze(-1)


def build_network(model_type: str, n_features: int, params: dict[str, Any]) -> nn.Module:
    """The untrained network of ``model_type`` for ``n_features`` inputs."""
    hidden, dropout, window = int(params["hidden"]), float(params["dropout"]), int(params["window"])
    if model_type == "lstm":
        return LSTMAttention(n_features, hidden, int(params["layers"]), dropout)
    if model_type == "cnn":
        return TemporalCNN(n_features, hidden, window, dropout)
    if model_type == "transformer":
        return TransformerRegressor(n_features, hidden, int(params["layers"]), int(params["heads"]), window, dropout)
    raise ValueError(f"model_type must be one of {SEQUENCE_TYPES}, got {model_type!r}")


# --- windows ---------------------------------------------------------------------------------------


def _scaled(X: pd.DataFrame, names: list[str], mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    missing = [n for n in names if n not in X.columns]
    if missing:
        raise DataError(f"features missing for this model: {missing[:5]}")
    m = X[names].to_numpy(dtype="float64", na_value=np.nan)
    z = np.clip(np.nan_to_num((m - mean) / scale, nan=0.0, posinf=CLIP, neginf=-CLIP), -CLIP, CLIP)
    return z.astype("float32")


class _Windows:
    """Every window of a scaled matrix as a view: ``batch(ends)`` copies only the windows asked for."""

    def __init__(self, z: np.ndarray, window: int, device: str = "cpu") -> None:
        padded = np.concatenate([np.zeros((window - 1, z.shape[1]), dtype="float32"), z])
        self.tensor = torch.from_numpy(padded).to(device)
        self.view = self.tensor.unfold(0, window, 1)  # (rows, features, window), no copy

    def batch(self, ends: np.ndarray) -> torch.Tensor:
        idx = torch.from_numpy(np.asarray(ends, dtype="int64")).to(self.tensor.device)
        return self.view[idx].transpose(1, 2).contiguous()  # (batch, window, features)


def _forward(net: nn.Module, windows: _Windows, ends: np.ndarray) -> np.ndarray:
    net.eval()
    out = []
    with torch.no_grad():
        for b in range(0, len(ends), PREDICT_BATCH):
            out.append(net(windows.batch(ends[b: b + PREDICT_BATCH])).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype="float32")


# --- the fitted model ------------------------------------------------------------------------------


class SequenceModel:
    """A fitted sequence network with its scaling, predicting and explaining like the tabular models."""

    artifact_format = ARTIFACT_FORMAT

    def __init__(self, model_type: str, net: nn.Module, description: dict[str, Any]) -> None:
        self.model_type = model_type
        self.net = net.cpu().eval()
        self.description = description
        self.params: dict[str, Any] = dict(description["params"])
        self.window = int(self.params["window"])
        self.feature_names: list[str] = list(description["feature_names"])
        self.mean = np.asarray(description["scaling"]["mean"], dtype="float64")
        self.scale = np.asarray(description["scaling"]["scale"], dtype="float64")
        self.label_mean = float(description["scaling"]["label_mean"])
        self.label_scale = float(description["scaling"]["label_scale"])
        self.n_threads = int(self.params.get("n_threads", 1))
        self.seed = int(self.params.get("seed", 0))

    @property
    def context_rows(self) -> int:
        """Rows before a predicted row that its window reads (window - 1)."""
        return self.window - 1

    def _windows(self, X: pd.DataFrame) -> _Windows:
        return _Windows(_scaled(X, self.feature_names, self.mean, self.scale), self.window)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """One prediction per row of X (consecutive bars); row i reads rows i - context_rows .. i."""
        with _torch_session(self.seed, self.n_threads):
            raw = _forward(self.net, self._windows(X), np.arange(len(X)))
        return raw.astype("float64") * self.label_scale + self.label_mean

    def contributions(self, X: pd.DataFrame, rows: np.ndarray | None = None) -> np.ndarray:
        """Expected-gradients SHAP values (shap's GradientExplainer) of the given rows of X (default:
        all), summed over each window's positions, shape (len(rows), p + 1); the last column is the
        background's mean prediction.  Seeded; X's rows give the windows, the background windows are
        drawn from X too."""
        import shap

        rows = np.arange(len(X)) if rows is None else np.asarray(rows)
        windows = self._windows(X)
        rng = np.random.default_rng(self.seed)
        full = np.arange(min(self.context_rows, len(X)), len(X))
        background = np.sort(rng.choice(full, size=min(SHAP_BACKGROUND, len(full)), replace=False))
        net = _OneColumn(self.net).eval()
        with _torch_session(self.seed, self.n_threads):
            explainer = shap.GradientExplainer(net, windows.batch(background))
            values = explainer.shap_values(windows.batch(rows), nsamples=SHAP_SAMPLES, rseed=self.seed)
            base = float(_forward(self.net, windows, background).mean())
        phi = np.asarray(values, dtype="float64").reshape(len(rows), self.window, len(self.feature_names))
        phi = phi.sum(axis=1) * self.label_scale  # per feature, in label units
        return np.column_stack([phi, np.full(len(rows), base * self.label_scale + self.label_mean)])

    def _importance_values(self, X: pd.DataFrame, y: Any, methods: tuple[str, ...] | list[str], sample_rows: int,
                           seed: int, repeats: int, shap_rows: int | None) -> list[tuple[str, np.ndarray, int]]:
        """(method, values, rows used) on consecutive rows X whose first ``context_rows`` are context only:
        ``shap`` (expected gradients on ``shap_rows`` of the sampled rows, at most SHAP_ROWS),
        ``permutation`` (a column shuffled over all rows of X, then re-windowed; drop in R^2 on the
        sampled rows) and ``correlation`` (|Spearman|, model-free)."""
        from brain_tasks.ml import importance as imp

        target = np.asarray(y, dtype="float64")
        candidates = np.arange(min(self.context_rows, max(len(X) - 1, 0)), len(X))
        rng = np.random.default_rng(seed)
        rows = candidates if len(candidates) <= sample_rows else np.sort(
            rng.choice(candidates, size=sample_rows, replace=False))
        n_shap = min(SHAP_ROWS, len(rows), shap_rows or len(rows))
        out = []
        for method in dict.fromkeys("shap" if m == "variance" else m for m in methods):
            if method == "shap":
                few = rows[:: max(1, len(rows) // n_shap)][:n_shap]  # spread over the whole block
                out.append((method, np.abs(self.contributions(X, few)[:, :-1]).mean(axis=0), len(few)))
            elif method == "permutation":
                out.append((method, self._permutation(X, target, rows, seed, repeats), len(rows)))
            elif method == "correlation":
                out.append((method, imp._rank_correlation(X[self.feature_names].iloc[rows], target[rows]), len(rows)))
            else:
                raise ValueError(f"unknown importance method {method!r}")
        return out

    def importance(self, X: pd.DataFrame, y: Any, methods: tuple[str, ...] | list[str], sample_rows: int,
                   seed: int) -> pd.DataFrame:
        """``compute_importance``'s ranked frame (method, feature, importance, rank) on consecutive rows X."""
        from brain_tasks.ml import importance as imp

        values = self._importance_values(X, y, methods, sample_rows, seed, imp.PERMUTATION_REPEATS, None)
        return pd.concat([imp._ranked(m, self.feature_names, v) for m, v, _ in values], ignore_index=True)

    def fold_importance(self, X: pd.DataFrame, y: Any, *, methods: tuple[str, ...], sample_rows: int, seed: int,
                        permutation_repeats: int = 1, shap_rows: int | None = None) -> pd.DataFrame:
        """``importance.fold_importance``'s unranked frame (method, feature, importance, n_rows) on a test
        block X preceded by its ``context_rows`` (SHAP on half the sampled rows unless ``shap_rows``)."""
        values = self._importance_values(X, y, methods, sample_rows, seed, permutation_repeats,
                                         shap_rows or max(1, (min(sample_rows, len(X)) + 1) // 2))
        return pd.concat([pd.DataFrame({"method": m, "feature": self.feature_names, "importance": v, "n_rows": n})
                          for m, v, n in values], ignore_index=True)

    def _permutation(self, X: pd.DataFrame, y: np.ndarray, rows: np.ndarray, seed: int, repeats: int) -> np.ndarray:
        from sklearn.metrics import r2_score

        z = _scaled(X, self.feature_names, self.mean, self.scale)
        padded = np.concatenate([np.zeros((self.window - 1, z.shape[1]), dtype="float32"), z])
        # Row r's window is padded rows r .. r + window - 1: shuffling a column of X and then windowing
        # equals writing the shuffled column into these positions of the sampled rows' windows.
        positions = rows[:, None] + np.arange(self.window)[None, :]
        windows = padded[positions]  # (rows, window, features)
        rng = np.random.default_rng(seed)

        def score(w: np.ndarray) -> float:
            out = []
            with _torch_session(self.seed, self.n_threads), torch.no_grad():
                self.net.eval()
                for b in range(0, len(w), PREDICT_BATCH):
                    out.append(self.net(torch.from_numpy(w[b: b + PREDICT_BATCH])).numpy())
            pred = np.concatenate(out).astype("float64") * self.label_scale + self.label_mean
            return float(r2_score(y[rows], pred))

        base = score(windows)
        drops = np.zeros(z.shape[1])
        for j in range(z.shape[1]):
            for _ in range(repeats):
                column = padded[:, j].copy()
                column[self.window - 1:] = rng.permutation(z[:, j])
                shuffled = windows.copy()
                shuffled[:, :, j] = column[positions]
                drops[j] += (base - score(shuffled)) / repeats
        return drops

    def to_bytes(self) -> bytes:
        """One safetensors file: the weights, and the JSON description in its header metadata."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        meta = json.dumps(self.description, sort_keys=True, separators=(",", ":"))
        return st_save(tensors, metadata={METADATA_KEY: meta})


class _OneColumn(nn.Module):
    """shap's explainers expect outputs of shape (batch, outputs)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).unsqueeze(-1)


def read_description(data: bytes) -> dict[str, Any]:
    """The JSON description in a safetensors artifact's header (8-byte little-endian length, JSON)."""
    if len(data) < 8:
        raise ValueError("not a safetensors artifact: too short")
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8: 8 + length].decode("utf-8"))
    meta = header.get("__metadata__") or {}
    if METADATA_KEY not in meta:
        raise ValueError("safetensors artifact without a brain_tasks description")
    return json.loads(meta[METADATA_KEY])


def load_sequence(data: bytes) -> SequenceModel:
    """Rebuild a fitted sequence model (on the CPU) from ``SequenceModel.to_bytes`` output."""
    description = read_description(data)
    model_type = description["model_type"]
    net = build_network(model_type, len(description["feature_names"]), description["params"])
    net.load_state_dict(st_load(data), strict=True)
    return SequenceModel(model_type, net, description)


# --- training --------------------------------------------------------------------------------------


def _split(n: int, params: dict[str, Any]) -> tuple[int, int]:
    """(end of the fitted rows, start of the validation block): a purge of ``purge`` rows between."""
    window, purge = int(params["window"]), int(params["purge"])
    n_val = max(round(float(params["val_fraction"]) * n), int(params["min_val_rows"]))
    fit_end = n - n_val - purge
    if fit_end - (window - 1) < int(params["min_val_rows"]):
        raise DataError(f"{n} training rows cannot hold {window}-bar windows, a {purge}-row purge and a "
                        f"{n_val}-row validation block")
    return fit_end, n - n_val


def fit_sequence(model_type: str, X: pd.DataFrame, y: np.ndarray, params: dict[str, Any], seed: int,
                 n_threads: int = 1, device: str = "cpu") -> SequenceModel:
    """Train ``model_type`` on consecutive rows X (labels y) with early stopping (module docstring)."""
    if model_type not in SEQUENCE_TYPES:
        raise ValueError(f"model_type must be one of {SEQUENCE_TYPES}, got {model_type!r}")
    device = resolve_device(device)
    names = [str(c) for c in X.columns]
    window, stride = int(params["window"]), int(params["stride"])
    if window < 1 or stride < 1 or int(params["epochs"]) < 1:
        raise ValueError("window, stride and epochs must be >= 1")
    fit_end, val_start = _split(len(X), params)
    head = X.iloc[:fit_end].to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(all="ignore"):
        mean = np.nan_to_num(np.nanmean(np.where(np.isfinite(head), head, np.nan), axis=0), nan=0.0)
        scale = np.nanstd(np.where(np.isfinite(head), head, np.nan), axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    label_mean = float(np.mean(y[:fit_end]))
    label_scale = float(np.std(y[:fit_end])) or 1.0
    z = _scaled(X, names, mean, scale)
    target = torch.from_numpy(((y - label_mean) / label_scale).astype("float32")).to(device)
    windows = _Windows(z, window, device)
    # A window needs window - 1 earlier rows; bars closer than `stride` share most of their window and,
    # with a multi-bar label, most of their label too.
    train_ends = np.arange(window - 1, fit_end, stride)
    per_epoch = min(len(train_ends), int(params["epoch_windows"]))
    val_ends = np.arange(max(val_start, window - 1), len(X))
    if len(val_ends) > int(params["val_windows"]):  # evenly spaced, so it still spans the whole block
        val_ends = np.unique(val_ends[np.linspace(0, len(val_ends) - 1, int(params["val_windows"])).round().astype(int)])
    batch = int(params["batch_size"])
    history: list[float] = []
    with _torch_session(seed, n_threads):
        net = build_network(model_type, len(names), params).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=float(params["learning_rate"]),
                                weight_decay=float(params["weight_decay"]))
        rng = np.random.default_rng(seed)
        best, best_state, best_epoch, stale = math.inf, None, -1, 0
        for epoch in range(int(params["epochs"])):
            net.train()
            # Long histories: each epoch a fresh seeded draw of `epoch_windows` windows, so the time per
            # epoch is bounded and, over the epochs, every part of the history is seen.
            order = rng.permutation(train_ends)[:per_epoch]
            for b in range(0, len(order), batch):
                ends = order[b: b + batch]
                loss = F.huber_loss(net(windows.batch(ends)), target[ends])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
            pred = torch.from_numpy(_forward(net, windows, val_ends)).to(device)
            val = float(F.huber_loss(pred, target[val_ends]))
            history.append(round(val, 6))
            if val < best:
                best, best_epoch, stale = val, epoch, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                stale += 1
                if stale >= int(params["patience"]):
                    break
        if best_state is None:
            raise DataError(f"{model_type} training diverged: the validation loss was never finite ({history})")
        net.load_state_dict(best_state)
    description = {
        "format": ARTIFACT_FORMAT,
        "model_type": model_type,
        "params": {**params, "seed": int(seed), "n_threads": int(n_threads)},
        "feature_names": names,
        "scaling": {"mean": mean.tolist(), "scale": scale.tolist(), "label_mean": label_mean,
                    "label_scale": label_scale, "clip": CLIP},
        "training": {"device": device, "fit_rows": int(fit_end), "validation_rows": int(len(X) - val_start),
                     "train_windows": len(train_ends), "best_epoch": int(best_epoch),
                     "validation_loss": history},
    }
    return SequenceModel(model_type, net, description)
