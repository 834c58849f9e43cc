"""The HTML report: one self-contained page over the Brain tables, with plots embedded as PNGs.

Everything shown comes from the database, so every string is passed through `html.escape` before it
reaches the page, and every text drawn by matplotlib has its `$` escaped (a feature name with a
dollar sign would otherwise be parsed as mathtext).  The page loads nothing from the network.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import sqlalchemy as sa
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from brain_tasks import timekeeping
from brain_tasks.service import replay_view
from brain_tasks.brain import registry, views
from brain_tasks.errors import IntegrityError
from brain_tasks.ml.metrics import bars_per_year, loses_to_flat, strategy_metrics
from brain_tasks.ml.regimes import REGIMES
from brain_tasks.ml.sizing import SIZERS
from brain_tasks.vocabulary import LOSES_TO_FLAT

# The columns the report reads of the stored frame (ts, fold, pred, label, bar_return, strategy_return, regime).
OOS_REQUIRED = ("ts", "strategy_return", "regime")
TOP_FEATURES = 15
MAX_RUN_ROWS = 20
MAX_REPLAYS = 3       # the newest replays get a section each
MAX_REPLAY_EVENTS = 30
# Methods in order of preference; any other stored method comes after these, alphabetically.  Permutation
# leads: its out-of-sample drop in R^2 measures what a feature is worth for prediction, while mean |SHAP|
# measures how much the model leans on it, noise included (docs/statistics.md, "What mean |SHAP| tells").
IMPORTANCE_METHODS = ("permutation", "shap", "correlation", "variance")
COMPARISON_METRICS = ("sharpe", "sortino", "max_drawdown", "calmar", "profit_factor", "hit_ratio", "n_trades")
REGIME_COLOURS = {"low": "#4c78a8", "normal": "#72b7b2", "high": "#f58518", "extreme": "#e45756"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:1rem 1.5rem;color:#1f2328;background:#fff}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.3rem;border-bottom:2px solid #d0d7de;padding-top:1rem}
h3{font-size:1.05rem;margin:1.1rem 0 .3rem}
table{border-collapse:collapse;margin:.3rem 0 .8rem;font-size:13px}
th,td{border:1px solid #d0d7de;padding:.2rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#eef7ee}.muted{color:#656d76}.bad{color:#b42318}
img{max-width:100%;height:auto;display:block;margin:.3rem 0}
nav ul{columns:3;margin:.3rem 0}code{background:#f6f8fa;padding:0 .2rem}
"""


# --- public API ----------------------------------------------------------------------------------

def write_report(engine: sa.Engine, out_dir: Path, *, symbols: list[str] | None = None) -> Path:
    """Write `out_dir/index.html` (plots embedded, no network assets) and return its path.

    `symbols` limits the report to those symbols (a symbol without a model gets a short section);
    by default every symbol the Brain knows of is shown.  Raises `IntegrityError` when a stored
    out-of-sample artifact does not match its sha256.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    page = render_report(engine, symbols=symbols)
    # Replace, never half-write: a server may be serving the previous report while this one is written.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def render_report(engine: sa.Engine, *, symbols: list[str] | None = None) -> str:
    """The report page as an HTML string."""
    generated = timekeeping.now().strftime("%Y-%m-%d %H:%M UTC")
    if not _has_schema(engine):
        body = ("<p class='bad'>This database has no Brain schema yet: run "
                "<code>brain-tasks db upgrade</code>, then ingest data and retrain.</p>")
        return _page(generated, body, [])
    names = sorted(set(symbols)) if symbols is not None else known_symbols(engine)
    if not names:
        body = ("<p class='muted'>The Brain is empty: no market data, models or runs yet. "
                "Run <code>brain-tasks demo</code>, or <code>brain-tasks ingest</code> and "
                "<code>brain-tasks retrain</code>.</p>")
        return _page(generated, body + _runs_section(engine), [])
    views = [load_symbol(engine, s) for s in names]
    replays_shown = replay_view.replay_list(engine, MAX_REPLAYS)
    sections = [_overview(views), *(_symbol_section(i, v) for i, v in enumerate(views)),
                _replays_section(engine, replays_shown), _runs_section(engine)]
    return _page(generated, "\n".join(sections), views, has_replays=bool(replays_shown))


known_symbols = views.known_symbols


def load_oos(engine: sa.Engine, digest: str) -> pd.DataFrame:
    """The out-of-sample predictions stored under `digest` (sha256 and format checked by
    `registry.oos_frame`), sorted by time."""
    frame = registry.oos_frame(engine, digest)
    missing = [c for c in OOS_REQUIRED if c not in frame.columns]
    if missing:
        raise IntegrityError(f"out-of-sample artifact {digest} lacks the columns {missing}")
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    # Walk-forward folds do not overlap; sorting and de-duplicating only guards the plot.
    return frame.sort_values("ts", kind="stable").drop_duplicates("ts", keep="last").reset_index(drop=True)


def equity_curve(strategy_return: pd.Series) -> pd.Series:
    """Compounded equity of a strategy's per-bar returns, starting from 1 (missing bars are flat)."""
    return (1.0 + pd.to_numeric(strategy_return, errors="coerce").fillna(0.0)).cumprod()


# --- reading one symbol --------------------------------------------------------------------------

@dataclass
class Curve:
    """One version's out-of-sample equity, for the plot."""

    model_type: str
    version: int
    as_of: dt.date
    champion: bool
    ts: pd.Series
    equity: pd.Series
    regime: pd.Series
    bar_return: pd.Series | None = None   # the market's return per bar: buy-and-hold over the same bars
    timeframe: str = "5m"
    strategy_return: pd.Series | None = None


@dataclass
class SymbolView:
    """Everything the report shows of one symbol, read once."""

    symbol: str
    latest_as_of: dt.date | None = None
    champion: Any = None                # model_registry row
    focus: Any = None                   # the version whose importance and regimes are shown
    curves: list[Curve] = field(default_factory=list)
    importance_method: str | None = None
    importance: list[Any] = field(default_factory=list)
    comparisons: list[Any] = field(default_factory=list)
    selection: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)  # (regime, row, choice)
    rollbacks: list[Any] = field(default_factory=list)
    drift_as_of: dt.date | None = None
    drift: list[Any] = field(default_factory=list)
    quality: list[tuple[str, str, int]] = field(default_factory=list)
    runs: list[Any] = field(default_factory=list)
    focus_metrics: dict[str, float] = field(default_factory=dict)   # the focus version's, out of sample
    benchmark: dict[str, float] = field(default_factory=dict)       # buy-and-hold over the same bars

    @property
    def has_model(self) -> bool:
        return self.latest_as_of is not None

    @property
    def focus_curve(self) -> Curve | None:
        return next((c for c in self.curves if _key(c) == _key(self.focus)), None)

    @property
    def champion_verdict(self) -> str | None:
        """LOSES_TO_FLAT when the champion's out-of-sample result is worse than not trading."""
        return LOSES_TO_FLAT if self.champion is not None and loses_to_flat(self.focus_metrics) else None

    @property
    def model_comparisons(self) -> list[Any]:
        """The latest comparison's model rows (models, flat, buy-and-hold), without the sizer's."""
        return [c for c in self.comparisons if c.model_type not in SIZERS]

    @property
    def sizer_comparisons(self) -> list[Any]:
        """The sizer's rows: sizing rules of the champion's positions, ranked among themselves."""
        return [c for c in self.comparisons if c.model_type in SIZERS]

    @property
    def trades(self) -> str:
        """'trades' when a model trades some regime, 'flat' when every chosen regime stays out."""
        choices = [c for _regime, _row, c in self.selection if "tradeable" in c]
        if choices:
            return "trades" if any(c["tradeable"] and c.get("model_type") != "flat" for c in choices) else "flat"
        return "trades" if self.champion is not None else "\u2013"


def load_symbol(engine: sa.Engine, symbol: str) -> SymbolView:
    """Read everything the report shows of `symbol` (OOS artifacts are sha256-checked)."""
    rec = views.symbol_records(engine, symbol, max_runs=MAX_RUN_ROWS)
    view = SymbolView(symbol, latest_as_of=rec.latest_as_of, rollbacks=rec.rollbacks, drift_as_of=rec.drift_as_of,
                      drift=rec.drift, quality=rec.quality, runs=rec.runs)
    if rec.latest_as_of is None:
        return view
    view.champion, view.comparisons = rec.champion, rec.comparisons
    view.selection = _selection(engine, symbol, rec.registry, view.champion)
    view.focus = _focus(view, rec.manifests)
    if view.focus is not None:
        view.importance_method, view.importance = views.top_importance(
            engine, symbol, view.focus.model_type, view.focus.version, IMPORTANCE_METHODS, TOP_FEATURES)
    champion_key = _key(view.champion)
    for m in rec.manifests:
        oos = load_oos(engine, m.oos_sha256)
        if oos.empty:  # nothing to draw; the comparison table still lists the version
            continue
        view.curves.append(Curve(m.model_type, m.version, m.as_of, _key(m) == champion_key, oos["ts"],
                                 equity_curve(oos["strategy_return"]), oos["regime"].astype(str),
                                 oos["bar_return"] if "bar_return" in oos.columns else None,
                                 str((m.config or {}).get("timeframe") or "5m"), oos["strategy_return"]))
    _headline(engine, view)
    return view


def _headline(engine: sa.Engine, view: SymbolView) -> None:
    """The focus version's stored out-of-sample metrics (computed from its curve when none are stored)
    and buy-and-hold over the same bars: what a reader compares first."""
    focus, curve = view.focus, view.focus_curve
    if focus is None:
        return
    view.focus_metrics = registry.metrics_of(engine, view.symbol, focus.model_type, int(focus.version)).get("all", {})
    if curve is None:
        return
    ppy = bars_per_year(curve.timeframe)
    if not view.focus_metrics and curve.strategy_return is not None:
        view.focus_metrics = strategy_metrics(pd.to_numeric(curve.strategy_return, errors="coerce").fillna(0.0), ppy)
    if curve.bar_return is not None:
        view.benchmark = strategy_metrics(pd.to_numeric(curve.bar_return, errors="coerce").fillna(0.0), ppy)


def _key(row: Any) -> tuple[str, int] | None:
    return None if row is None else (row.model_type, int(row.version))


def _focus(view: SymbolView, manifests: Sequence[Any]) -> Any:
    """The champion, else this run's best-ranked version, else the first version of the latest run."""
    if view.champion is not None:
        return view.champion
    best = [c for c in view.model_comparisons if c.is_best] or list(view.model_comparisons)
    if best:
        return best[0]
    return manifests[0] if manifests else None


def _selection(engine: sa.Engine, symbol: str, rows: Sequence[Any],
               champion: Any) -> list[tuple[str, Any, dict[str, Any]]]:
    """(regime, registry row or None, choice) for each regime, as `BrainClient.current_choice` reads
    them: the stored per-regime choice, else the champion."""
    chosen_by_regime = registry.regime_choice(engine, symbol)
    if not chosen_by_regime:
        return []
    by_key = {(r.model_type, r.version): r for r in rows}
    if champion is None:
        fallback = {"reason": "no model chosen and no champion"}
    else:
        from brain_tasks.vocabulary import LOSES_TO_FLAT

        losing = registry.loses_to_flat(engine, champion)  # served flat then, as serving falls back
        fallback = {"reason": "champion (no per-regime choice for this regime)"
                    + (f": {LOSES_TO_FLAT}, served flat" if losing else "")}
    order = {r: i for i, r in enumerate(REGIMES)}
    regimes = sorted(set(REGIMES) | set(chosen_by_regime), key=lambda r: (order.get(r, len(order)), r))
    out = []
    for regime in regimes:
        c = chosen_by_regime.get(regime)
        if c is None:
            out.append((regime, champion, fallback))
        else:
            out.append((regime, by_key.get((c["model_type"], c["version"])), c))
    return out


# --- plots ---------------------------------------------------------------------------------------

def _equity_axes(ax: Any, title: str) -> None:
    """What every equity chart shares: the start line at 1, a UTC time axis, labels, grid and legend."""
    ax.axhline(1.0, color="#888", linewidth=0.6, linestyle=":")
    _time_axis(ax)
    ax.set_ylabel("equity (start = 1)")
    ax.set_xlabel("UTC")
    ax.set_title(_mpl(title), fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, **_LEGEND_RIGHT)


def _mpl(text: object) -> str:
    """Text safe for matplotlib: a `$` from the database must not start mathtext."""
    return str(text).replace("$", r"\$")


def _naive_utc(ts: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(ts).tz_convert("UTC").tz_localize(None).to_numpy()


def _png(fig: Figure, alt: str) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


# The time plots share one axes box and one time range, so a regime sits under its equity bars; the
# right quarter of each figure holds its legend, off the data.
_PLOT_BOX_EQUITY = (0.07, 0.15, 0.70, 0.76)
_PLOT_BOX_DRAWDOWN = (0.07, 0.22, 0.70, 0.62)
_PLOT_BOX_REGIME = (0.07, 0.32, 0.70, 0.42)
_LEGEND_RIGHT = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0, "frameon": False}


def _time_range(view: SymbolView) -> tuple[np.datetime64, np.datetime64]:
    """First and last out-of-sample bar over every curve of the symbol (none may be empty)."""
    times = [_naive_utc(c.ts) for c in view.curves]
    return min(t[0] for t in times), max(t[-1] for t in times)


def _time_axis(ax: Any) -> None:
    """Concise UTC date ticks: full timestamps on every tick overlap on a 10-inch figure.  At most 9
    ticks; at least 3 (the default 5 sends a 4-5 day range to hourly ticks, where no interval fits 9
    ticks and matplotlib warns that it could not pick one)."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator(minticks=3, maxticks=9)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def equity_plot(view: SymbolView) -> str:
    """Out-of-sample equity per version, the champion drawn thick and labelled."""
    fig = Figure(figsize=(10, 3.4))
    ax = fig.add_axes(_PLOT_BOX_EQUITY)
    for curve in sorted(view.curves, key=lambda c: (c.champion, c.model_type, c.version)):
        label = f"{curve.model_type} v{curve.version}"
        if curve.as_of != view.latest_as_of:
            label += f" ({curve.as_of:%Y-%m-%d})"
        if curve.champion:
            label = "\u2605 " + label.replace(" (", "\n(") + " \u2014 champion"
        ax.plot(_naive_utc(curve.ts), curve.equity.to_numpy(), label=_mpl(label),
                linewidth=2.4 if curve.champion else 1.1, alpha=1.0 if curve.champion else 0.8,
                zorder=3 if curve.champion else 2)
    focus = view.focus_curve
    if focus is not None and focus.bar_return is not None:
        ax.plot(_naive_utc(focus.ts), equity_curve(focus.bar_return).to_numpy(), label="buy & hold (same bars)",
                color="#6e7781", linewidth=1.2, linestyle="--", zorder=1)
    ax.set_xlim(*_time_range(view))
    _equity_axes(ax, f"{view.symbol}: out-of-sample equity, walk-forward folds")
    return _png(fig, f"{view.symbol} out-of-sample equity curves")


def drawdown_plot(view: SymbolView, curve: Curve) -> str:
    """Underwater curve: the fall from the running peak of `curve` and of buy-and-hold on the same bars."""
    fig = Figure(figsize=(10, 2.0))
    ax = fig.add_axes(_PLOT_BOX_DRAWDOWN)
    ts = _naive_utc(curve.ts)
    under = (curve.equity / curve.equity.cummax() - 1.0).to_numpy()
    ax.fill_between(ts, under, 0.0, color="#e45756", alpha=0.35, linewidth=0,
                    label=_mpl(f"{curve.model_type} v{curve.version}"))
    if curve.bar_return is not None:
        bh = equity_curve(curve.bar_return)
        ax.plot(ts, (bh / bh.cummax() - 1.0).to_numpy(), color="#6e7781", linewidth=1.0, linestyle="--",
                label="buy & hold")
    ax.set_xlim(*_time_range(view))
    _time_axis(ax)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_title(_mpl(f"{view.symbol}: drawdown from peak (out of sample)"), fontsize=10, loc="left")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, **_LEGEND_RIGHT)
    return _png(fig, f"{view.symbol} drawdown")


def _segments(ts: np.ndarray, regime: np.ndarray) -> dict[str, list[tuple[float, float]]]:
    """(start, width) runs of each regime, in matplotlib date units, for broken_barh."""
    from matplotlib.dates import date2num

    x = date2num(ts)
    # Each bar lasts until the next; the last one gets the median bar length.
    step = float(np.median(np.diff(x))) if len(x) > 1 else 1.0 / 24
    ends = np.append(x[1:], x[-1] + step)
    change = np.flatnonzero(np.r_[True, regime[1:] != regime[:-1]])
    stops = np.append(change[1:], len(x)) - 1
    out: dict[str, list[tuple[float, float]]] = {}
    for a, b in zip(change, stops):
        out.setdefault(str(regime[a]), []).append((x[a], ends[b] - x[a]))
    return out


def regime_plot(view: SymbolView, curve: Curve) -> str:
    """The volatility regime of each out-of-sample bar of `curve`, as a coloured band."""
    fig = Figure(figsize=(10, 1.5))
    ax = fig.add_axes(_PLOT_BOX_REGIME)
    segments = _segments(_naive_utc(curve.ts), curve.regime.to_numpy(dtype=object))
    names = [r for r in REGIMES if r in segments] + sorted(set(segments) - set(REGIMES))
    for name in names:
        ax.broken_barh(segments[name], (0, 1), facecolors=REGIME_COLOURS.get(name, "#bab0ac"))
    ax.xaxis_date()
    ax.set_xlim(*_time_range(view))
    _time_axis(ax)
    ax.set_yticks([])
    ax.set_ylim(0, 1)
    ax.set_xlabel("UTC")
    ax.set_title(_mpl(f"{view.symbol}: volatility regime ({curve.model_type} v{curve.version} "
                      "out-of-sample bars)"), fontsize=10, loc="left")
    ax.legend(handles=[Patch(color=REGIME_COLOURS.get(n, "#bab0ac"), label=_mpl(n)) for n in names],
              fontsize=8, ncol=2, **_LEGEND_RIGHT)
    return _png(fig, f"{view.symbol} regime timeline")


def importance_plot(view: SymbolView) -> str:
    """Horizontal bars of the focus version's top features, the most important on top."""
    rows = list(reversed(view.importance))
    fig = Figure(figsize=(10, 0.24 * len(rows) + 1.0), layout="constrained")
    ax = fig.subplots()
    values = [float(r.importance) for r in rows]
    ax.barh(range(len(rows)), values, color=["#4c78a8" if v >= 0 else "#e45756" for v in values])
    ax.set_yticks(range(len(rows)), [_mpl(r.feature) for r in rows], fontsize=8)
    ax.axvline(0, color="#888", linewidth=0.6)
    ax.set_xlabel(_mpl(f"importance ({view.importance_method})"))
    focus = view.focus
    ax.set_title(_mpl(f"{view.symbol}: top {len(rows)} features of {focus.model_type} v{focus.version}"),
                 fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig, f"{view.symbol} feature importance")


# --- HTML ----------------------------------------------------------------------------------------

def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any, digits: int = 3) -> str:
    if value is None or isinstance(value, bool):
        return "\u2013" if value is None else str(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return _e(value)
    if not math.isfinite(v):
        return "\u2013"
    if v.is_integer() and abs(v) < 1e9:
        return str(int(v))
    return f"{v:.{digits}f}"


def _pvalue(value: Any) -> str:
    """p-values span many decades: tiny ones in scientific notation rather than as 0.0000."""
    if value is None or not math.isfinite(float(value)):
        return "\u2013"
    v = float(value)
    return f"{v:.4f}" if v >= 1e-3 or v == 0 else f"{v:.1e}"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: Iterable[int] = (),
           row_class: Sequence[str] | None = None) -> str:
    """A table of already-escaped cells; `numeric` are the right-aligned column indexes."""
    nums = set(numeric)
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        cells = "".join(f'<td class="num">{c}</td>' if j in nums else f"<td>{c}</td>"
                        for j, c in enumerate(row))
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</table>")
    return "".join(out)


def _anchor(index: int) -> str:
    return f"sym-{index}"


def _page(generated: str, body: str, views: Sequence[SymbolView], has_replays: bool = False) -> str:
    toc = ""
    if views:
        items = "".join(f'<li><a href="#{_anchor(i)}">{_e(v.symbol)}</a></li>' for i, v in enumerate(views))
        replays_item = '<li><a href="#replays">Replays</a></li>' if has_replays else ""
        toc = (f'<nav><b>Contents</b><ul><li><a href="#overview">Overview</a></li>{items}{replays_item}'
               '<li><a href="#runs">Runs</a></li></ul></nav>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>Brain report</title><style>{CSS}</style></head><body>"
            f"<h1>Brain report</h1><p class=\"muted\">Generated {_e(generated)}. Every metric and curve "
            "is out-of-sample (walk-forward folds with an embargo).</p>"
            f"{toc}{body}</body></html>\n")


def _pct(value: Any) -> str:
    v = None if value is None else float(value)
    if v is None or not math.isfinite(v):
        return "\u2013"
    cls = "bad" if v < 0 else ""
    return f'<span class="{cls}">{100 * v:+.1f}%</span>' if cls else f"{100 * v:+.1f}%"


def _overview(views: Sequence[SymbolView]) -> str:
    """One row a symbol: what trades, how it did out of sample, and the market over the same bars."""
    rows = []
    for i, v in enumerate(views):
        champ, focus, m, bh = v.champion, v.focus, v.focus_metrics, v.benchmark
        last = v.rollbacks[0] if v.rollbacks else None
        if champ is not None:
            model = f"{_e(champ.model_type)} v{_e(champ.version)}"
            if v.champion_verdict:
                model += f' <span class="bad">{_e(v.champion_verdict)}</span>'
        elif focus is not None:
            model = f'<span class="muted">none (best: {_e(focus.model_type)} v{_e(focus.version)})</span>'
        else:
            model = '<span class="muted">no model yet</span>'
        rows.append([
            f'<a href="#{_anchor(i)}">{_e(v.symbol)}</a>', model, _num(m.get("sharpe"), 2),
            _pct(m.get("total_return")), _pct(m.get("max_drawdown")), _pct(bh.get("total_return")),
            _pct(bh.get("max_drawdown")), _e(v.trades),
            _e(v.latest_as_of) if v.latest_as_of else "\u2013",
            f"{_e(last.action)} ({_e(last.as_of)})" if last is not None else "\u2013",
            f"{sum(1 for d in v.drift if d.drifted)} / {len(v.drift)}" if v.drift else "\u2013",
            _e(sum(n for _c, _s, n in v.quality)),
        ])
    return ('<h2 id="overview">Overview</h2><p class="muted">Sharpe, total return and max drawdown are the '
            "champion's (or, without one, the latest run's best version's), out of sample after costs; "
            "buy-and-hold holds the market over the same bars. <i>flat</i>: no model beat doing nothing in "
            "any regime.</p>"
            + _table(["symbol", "champion", "Sharpe", "total return", "max drawdown", "buy & hold return",
                      "buy & hold max DD", "trades / flat", "latest training", "last decision",
                      "drifted features", "open quality findings"], rows, numeric=[2, 3, 4, 5, 6, 11]))


def _symbol_section(index: int, view: SymbolView) -> str:
    parts = [f'<section><h2 id="{_anchor(index)}">{_e(view.symbol)}</h2>']
    if not view.has_model:
        parts.append('<p class="muted">No model yet: nothing has been trained for this symbol.</p>')
    else:
        champ = view.champion
        parts.append(f"<p>Latest training {_e(view.latest_as_of)}; champion: "
                     + (f"<b>{_e(champ.model_type)} v{_e(champ.version)}</b> (trained {_e(champ.as_of)})"
                        if champ is not None else '<span class="muted">none promoted</span>') + ".</p>")
        if view.champion_verdict:
            m = view.focus_metrics
            parts.append(f'<p class="bad">The champion is {_e(view.champion_verdict)}: out-of-sample Sharpe '
                         f"{_num(m.get('sharpe'), 2)}, total return {_pct(m.get('total_return'))}. It stays the "
                         "reference the next candidate is measured against; each regime trades its own choice "
                         "(below), flat where nothing beat flat.</p>")
        parts.append("<h3>Out-of-sample equity</h3>")
        parts.append(equity_plot(view) if view.curves else '<p class="muted">No out-of-sample predictions.</p>')
        focus_curve = view.focus_curve
        if focus_curve is not None and len(focus_curve.ts):
            parts.append(drawdown_plot(view, focus_curve))
            parts.append("<h3>Regime timeline</h3>" + regime_plot(view, focus_curve))
        parts.append("<h3>Feature importance</h3>")
        parts.append(importance_plot(view) if view.importance
                     else '<p class="muted">No feature importance stored for this version.</p>')
        parts.append(_comparison_table(view))
        parts.append(_selection_table(view))
    tables = [(view.rollbacks, _rollback_table), (view.drift, _drift_table), (view.quality, _quality_table),
              (view.runs, _runs_table)]
    # A symbol without a model keeps its section short: only what the Brain holds for it.
    parts.extend(render(view) for rows, render in tables if rows or view.has_model)
    parts.append("</section>")
    return "\n".join(parts)


def _comparison_table(view: SymbolView) -> str:
    models = view.model_comparisons
    if not models:
        return '<h3>Model comparison</h3><p class="muted">No comparison for the latest training.</p>'
    html_ = f"<h3>Model comparison ({_e(view.latest_as_of)})</h3>" + _ranked_table(models, "model")
    sizers = view.sizer_comparisons
    if sizers:
        html_ += ("<h4>Position sizing</h4><p class=\"muted\">Sizing rules for the champion's positions, ranked "
                  "among themselves (not models); the first one sizes.</p>" + _ranked_table(sizers, "sizing"))
    return html_


def _ranked_table(comparisons: Sequence[Any], what: str) -> str:
    """Rows ranked 1..n in their stored order (models and sizers are stored with ranks of their own)."""
    shown = [m for m in COMPARISON_METRICS
             if m != "n_trades" or any("n_trades" in (c.metrics or {}) for c in comparisons)]
    rows = [[_e(i + 1), f"{_e(c.model_type)} v{_e(c.version)}", _num(c.composite_score),
             *(_num((c.metrics or {}).get(m)) for m in shown)] for i, c in enumerate(comparisons)]
    classes = ["best" if c.is_best else "" for c in comparisons]
    return _table(["rank", what, "composite", *shown], rows, numeric=range(2, 3 + len(shown)), row_class=classes)


def _selection_table(view: SymbolView) -> str:
    if not view.selection:
        if view.champion is not None:
            return ('<h3>Model per regime</h3><p class="muted">No per-regime choice on the latest training '
                    f"day: the champion {_e(view.champion.model_type)} v{_e(view.champion.version)} trades "
                    "every regime.</p>")
        return '<h3>Model per regime</h3><p class="muted">No per-regime selection yet.</p>'
    rows = [[_e(regime), f"{_e(row.model_type)} v{_e(row.version)}" if row is not None
             else _e(choice.get("model_type") or "\u2013"),
             _num(choice.get("confidence")), _e(choice.get("reason", ""))] for regime, row, choice in view.selection]
    return "<h3>Model per regime</h3>" + _table(["regime", "model", "confidence", "why"], rows, numeric=[2])


def _rollback_table(view: SymbolView) -> str:
    if not view.rollbacks:
        return '<h3>Rollback history</h3><p class="muted">No rollback checks yet.</p>'
    rows = [[_e(r.as_of), _e(r.action), _e(r.model_type),
             f"v{_e(r.from_version)}" if r.from_version is not None else "\u2013",
             f"v{_e(r.to_version)}" if r.to_version is not None else "\u2013", _e(r.reason)]
            for r in view.rollbacks]
    return "<h3>Rollback history</h3>" + _table(["as of", "action", "model", "from", "to", "reason"], rows)


def _drift_table(view: SymbolView) -> str:
    if not view.drift:
        return '<h3>Feature drift</h3><p class="muted">No drift analysis yet.</p>'
    drifted = [d for d in view.drift if d.drifted]
    head = f"<h3>Feature drift ({_e(view.drift_as_of)})</h3><p>{len(drifted)} of {len(view.drift)} features drifted"
    if not drifted:
        return head + ".</p>"
    rows = [[_e(d.feature), _num(d.psi), _num(d.psi_threshold), _num(d.ks_stat), _pvalue(d.ks_pvalue)]
            for d in drifted]
    return head + ":</p>" + _table(["feature", "PSI", "PSI threshold", "KS", "KS p-value"], rows,
                                    numeric=[1, 2, 3, 4])


def _quality_table(view: SymbolView) -> str:
    if not view.quality:
        return '<h3>Open data-quality findings</h3><p class="muted">None.</p>'
    rows = [[_e(check), _e(severity), _e(n)] for check, severity, n in view.quality]
    return "<h3>Open data-quality findings</h3>" + _table(["check", "severity", "count"], rows, numeric=[2])


def _runs_table(view: SymbolView) -> str:
    if not view.runs:
        return '<h3>Training runs</h3><p class="muted">No runs recorded.</p>'
    rows = [[_e(r.run_id), _e(r.as_of), _e(r.state), _e(r.error or "")] for r in view.runs]
    return "<h3>Training runs</h3>" + _table(["run", "as of", "state", "error"], rows)


def _runs_section(engine: sa.Engine) -> str:
    """The fan-out runs' own summary rows, newest first."""
    runs = views.run_summaries(engine, MAX_RUN_ROWS)
    if not runs:
        return '<h2 id="runs">Runs</h2><p class="muted">No fan-out runs recorded.</p>'
    rows = [[_e(r.run_id), _e(r.as_of), _e(r.state), _e(r.error or ""),
             _e(r.finished_at.strftime("%Y-%m-%d %H:%M") if r.finished_at else "")] for r in runs]
    return '<h2 id="runs">Runs</h2>' + _table(["run", "as of", "state", "error", "finished (UTC)"], rows)


# --- replays -------------------------------------------------------------------------------------

def replay_equity_plot(detail: dict[str, Any]) -> str:
    """The pooled equity of every policy of a replay, brain drawn thick."""
    fig = Figure(figsize=(10, 3.4))
    ax = fig.add_axes(_PLOT_BOX_EQUITY)
    for name, curve in detail["curves"].items():
        ts = pd.to_datetime(pd.Series(curve["ts"]), utc=True)
        brain = name == replay_view.BRAIN
        ax.plot(_naive_utc(ts), np.array(curve["equity"], dtype="float64"), label=_mpl(name),
                linewidth=2.4 if brain else 1.1, color="#1f2328" if brain else None, zorder=3 if brain else 2,
                linestyle="--" if name.startswith(replay_view.BRAIN + "[") else "-")
    _equity_axes(ax, f"Replay {detail['replay']['replay_id']}: pooled equity per policy")
    return _png(fig, f"replay {detail['replay']['replay_id']} pooled equity per policy")


def replay_table(detail: dict[str, Any]) -> str:
    """The statistics table (`replay_view.STAT_COLUMNS` per policy, brain first) with the DSR and PBO."""
    st = detail["statistics"]
    cell = {"pct": _pct, "p": _pvalue, "num": lambda v: _num(v, 2),
            "share": lambda v: "\u2013" if v is None else f"{100 * float(v):.0f}%"}
    rows = [[f"<b>{_e(r['policy'])}</b>" if r["policy"] == replay_view.BRAIN else _e(r["policy"]),
             *(cell[kind](r[key]) for key, _head, kind in replay_view.STAT_COLUMNS)] for r in st["rows"]]
    table = _table(["policy", *(head for _key, head, _kind in replay_view.STAT_COLUMNS)], rows,
                   numeric=range(1, 1 + len(replay_view.STAT_COLUMNS)),
                   row_class=["best" if r["is_best"] else "" for r in st["rows"]])
    dsr, pbo = st.get("dsr"), st.get("pbo")
    notes = []
    if dsr:
        notes.append(f"<b>DSR</b> of the best policy ({_e(dsr.get('best'))}, Sharpe {_num(dsr.get('sharpe'), 2)}) "
                     f"over {_e(dsr.get('n_trials'))} policies tried: <b>{_num(dsr.get('dsr'))}</b> (the luckiest "
                     f"zero-skill policy would show a Sharpe of about {_num(dsr.get('benchmark_sharpe'), 2)}).")
    if pbo:
        notes.append(f"<b>PBO</b> (CSCV over {_e(pbo.get('n_policies'))} policies): <b>{_num(pbo.get('pbo'))}</b>, "
                     f"from {_e(pbo.get('n_blocks'))} blocks of {_e(pbo.get('bars_per_block'))} bars each.")
    elif st.get("pbo_reason"):
        notes.append(f"No PBO: {_e(st['pbo_reason'])}.")
    return table + "".join(f"<p>{n}</p>" for n in notes)


def _replay_block(detail: dict[str, Any]) -> str:
    r = detail["replay"]
    parts = [f"<h3>{_e(r['replay_id'])}</h3>",
             f"<p>{_e(r['start'])} → {_e(r['end'])}, a step every {_e(r['every'])}; models "
             f"{_e(', '.join(r['models']))}; {_e(r['n_symbols_walked'])} of {len(r['symbols'])} symbols walked; "
             f"state <b>{_e(r['state'])}</b>. Statistics of the pooled, equal-weight portfolio"
             + (f" over {_e(detail['statistics']['n_bars'])} bars" if detail["statistics"].get("n_bars") else "")
             + ".</p>"]
    if not detail["statistics"]["rows"]:
        parts.append('<p class="muted">No pooled results yet.</p>')
    else:
        parts.append(replay_equity_plot(detail) if detail["curves"] else "")
        parts.append(replay_table(detail))
    events = detail["events"][:MAX_REPLAY_EVENTS]
    if events:
        parts.append("<p>The brain policy's promotions and rollbacks:</p>" + _table(
            ["when (UTC)", "symbol", "step", "what", "reason"],
            [[_e(e["at"][:16].replace("T", " ")), _e(e["symbol"]), _e(e["step"]), _e(e["kind"]), _e(e["reason"])]
             for e in events], numeric=[2]))
    left_out = [s for s in detail["symbols"] if not s["walked"]]
    if left_out:
        parts.append("<p>Not walked:</p>" + _table(["symbol", "state", "reason"], [
            [_e(s["symbol"]), _e(s["state"] or "–"), _e(s["reason"] or "")] for s in left_out]))
    return "\n".join(parts)


def _replays_section(engine: sa.Engine, listed: Sequence[dict[str, Any]]) -> str:
    """The newest replays (`MAX_REPLAYS`): pooled equity per policy and the statistics table each."""
    if not listed:
        return ""
    blocks = [_replay_block(d) for d in (replay_view.replay_detail(engine, r["replay_id"]) for r in listed)
              if d is not None]
    return ('<h2 id="replays">Replays</h2><p class="muted">The newest replays (<code>brain-tasks replay</code>): '
            "every policy traded on the same bars with only what was known at each step. p vs brain is the HAC "
            "test of the Sharpe difference against brain; the DSR deflates the best Sharpe for the number of "
            "policies tried; a PBO near 0.5 says that the in-sample best predicts nothing out of sample.</p>"
            + "\n".join(blocks))


_has_schema = views.has_schema
