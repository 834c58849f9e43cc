"""What a request is: its checks (model types, symbols, dates, task arguments) and its run identity.

Checks are used by the client (before anything is enqueued), the CLI (one line, exit status 2) and the fan-out
tasks (a message sent by name, bypassing the client, is refused the same way).  Light on purpose:
importing it loads no ML or exchange library.

A run's id is derived from what it does, not drawn at random: the same daily retrain enqueued twice
is the same run.  Each enqueue is a new attempt of it, with rows of its own in training_runs
(brain_tasks/brain/runs.py), so a re-run never reads an earlier attempt's states.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

from brain_tasks import timekeeping
from brain_tasks.errors import BrainError
from brain_tasks.market.symbols import InvalidArgument, InvalidSymbol, symbol_label, validate_symbol

# Every model type the trainers know; tests check this equals brain_tasks.ml.models.MODEL_TYPES
# (which imports LightGBM, so the client cannot read it from there).
MODEL_TYPES = ("lightgbm", "xgboost", "baseline", "lstm", "cnn", "transformer")
MAX_SYMBOLS = 10_000


class RequestError(BrainError, ValueError):
    """A request that cannot be carried out as asked; nothing was enqueued or written."""


class UnknownModelError(RequestError):
    """A model type the trainers do not know."""


class BadSymbolError(RequestError):
    """A symbol that is malformed, or unknown to the Brain where it must be known."""


class BadDateError(RequestError):
    """An as-of date that is not a real YYYY-MM-DD date, or a day after today (UTC)."""


class BadArgumentError(RequestError, InvalidArgument):
    """An argument of the wrong shape: a bare string where a list belongs ("ETH/BTC" would fan out over
    its seven characters).  Also the workers' InvalidArgument, so a task refuses it alike."""


def _printable(value: Any) -> str:
    return repr(symbol_label(value))


def check_symbol(symbol: Any) -> str:
    """The workers' own rule (`market.symbols.validate_symbol`), raised as a request error."""
    try:
        return validate_symbol(symbol)
    except InvalidSymbol as exc:
        raise BadSymbolError(str(exc)) from None


def check_symbols(symbols: Any, *, allow_empty: bool = False) -> list[str]:
    """A list of valid, distinct symbols (order kept).  A bare string is refused, not split into letters."""
    if isinstance(symbols, (str, bytes)) or not isinstance(symbols, Iterable):
        raise BadArgumentError(f"symbols must be a list of symbols, got {type(symbols).__name__} "
                               f"{_printable(symbols)}" + (f" (did you mean [{symbols!r}]?)" if isinstance(symbols, str)
                                                          else ""))
    out = list(dict.fromkeys(check_symbol(s) for s in symbols))
    if not out and not allow_empty:
        raise BadSymbolError("no symbols given")
    if len(out) > MAX_SYMBOLS:
        raise BadSymbolError(f"{len(out)} symbols in one request; at most {MAX_SYMBOLS}")
    return out


def check_models(models: Any) -> list[str]:
    if isinstance(models, (str, bytes)) or not isinstance(models, Iterable):
        raise BadArgumentError(f"models must be a list of model types, got {_printable(models)}")
    out = list(dict.fromkeys(models))
    unknown = [m for m in out if m not in MODEL_TYPES]
    if unknown:
        raise UnknownModelError(f"unknown model type {', '.join(map(_printable, unknown))}; "
                                f"known: {', '.join(MODEL_TYPES)}")
    if not out:
        raise UnknownModelError("no model types given")
    return out


def check_as_of(value: str | dt.date | dt.datetime | None) -> dt.date:
    """An as-of date (ISO string or date) no later than today in UTC; None means today in UTC.

    A future day is refused here, before anything is enqueued: no data exists for it, so every symbol
    of the run would only fail later as stale."""
    today = timekeeping.now().date()
    if value is None:
        return today
    if isinstance(value, dt.datetime):
        day = value.astimezone(dt.timezone.utc).date() if value.tzinfo else value.date()
    elif isinstance(value, dt.date):
        day = value
    else:
        text = str(value).strip()
        try:
            day = dt.date.fromisoformat(text[:10]) if re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ].*)?", text) \
                else dt.date.fromisoformat(text)
        except ValueError:
            raise BadDateError(f"invalid as-of date {_printable(value)}: expected YYYY-MM-DD") from None
    if day > today:
        raise BadDateError(f"as-of date {day.isoformat()} is in the future (today is {today.isoformat()} UTC): "
                           "no data exists for it yet")
    return day


# --- run identities ------------------------------------------------------------------------------

RUN_SUMMARY_SYMBOL = "*"  # the training_runs row of an attempt as a whole


def as_of_date(value: str | dt.date | dt.datetime | None) -> dt.date:
    """Parse an as-of date (ISO string or date); default: today in UTC.  A bad date is a BadDateError."""
    return check_as_of(value)


def run_id_for(kind: str, as_of: dt.date, symbols: Iterable[str] = (), models: Iterable[str] = ()) -> str:
    digest = hashlib.sha256(
        json.dumps({"symbols": sorted(symbols), "models": sorted(models)}).encode()).hexdigest()[:12]
    return f"{kind}-{as_of.isoformat()}-{digest}"


def replay_id_for(symbols: Iterable[str], models: Iterable[str], start: dt.date, end: dt.date, every: str,
                  grid: dict[str, list[Any]], config_hash: str) -> str:
    """A replay's id: what it replays (symbols, models, window, step length, the grid of settings) and the
    training config it trains with.  The same request is the same replay, whose rows a re-run rewrites
    identically; a changed config is another replay."""
    payload = {"symbols": sorted(symbols), "models": sorted(models), "start": start.isoformat(),
               "end": end.isoformat(), "every": every,
               "grid": {k: sorted(map(str, v)) for k, v in sorted(grid.items())}, "config_hash": config_hash}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
    return f"replay-{start.isoformat()}-{end.isoformat()}-{digest}"
