"""Symbols and lists of symbols as requests carry them: checked before anything is fetched or written.

Pure and light (no pandas, no ccxt), so the client and the command line can refuse a request with the
same rule the workers apply.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from brain_tasks.errors import DataError

MAX_SYMBOL_LENGTH = 64  # the width of every symbol column in the Brain
# ccxt unified symbols: BASE/QUOTE, optionally :SETTLE and an expiry/strike suffix.  Anything else
# (quotes, spaces, semicolons) is refused before it reaches an exchange or a table.
_SYMBOL = re.compile(r"^[A-Za-z0-9.]{1,24}/[A-Za-z0-9.]{1,16}(:[A-Za-z0-9.]{1,16}(-[A-Za-z0-9.]{1,16}){0,3})?$")


class InvalidSymbol(DataError):
    """A symbol that is not a ccxt unified symbol (empty, too long, control characters, malformed)."""

    check = "invalid_symbol"


class InvalidArgument(DataError, TypeError):
    """A task or request argument of the wrong shape (a string where a list of symbols belongs)."""

    check = "invalid_argument"


def symbol_label(value: Any) -> str:
    """`value` as text that any table and log line can hold: control characters escaped, at most
    MAX_SYMBOL_LENGTH characters (PostgreSQL refuses a NUL byte in text, so a raw one would make
    recording the failure fail too)."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if unicodedata.category(c)[0] != "C" else c.encode("unicode_escape").decode("ascii")
                   for c in text)
    return text if len(text) <= MAX_SYMBOL_LENGTH else text[:MAX_SYMBOL_LENGTH - 1] + "…"


def validate_symbol(symbol: Any) -> str:
    """Return `symbol` if it is a ccxt unified symbol ('BTC/USDT', 'BTC/USDT:USDT'), else raise
    InvalidSymbol saying what is wrong with it."""
    if not isinstance(symbol, str):
        raise InvalidSymbol(f"invalid symbol {symbol_label(symbol)}: a symbol is a string, not "
                            f"{type(symbol).__name__}")
    if not symbol:
        raise InvalidSymbol("invalid symbol: empty")
    bad = next((i for i, c in enumerate(symbol) if unicodedata.category(c)[0] == "C"), None)
    if bad is not None:
        raise InvalidSymbol(f"invalid symbol {symbol_label(symbol)!r}: control character "
                            f"{symbol[bad].encode('unicode_escape').decode('ascii')} at position {bad}")
    if len(symbol) > MAX_SYMBOL_LENGTH:
        raise InvalidSymbol(f"invalid symbol {symbol_label(symbol)!r}: {len(symbol)} characters, at most "
                            f"{MAX_SYMBOL_LENGTH}")
    if not _SYMBOL.match(symbol):
        raise InvalidSymbol(f"invalid symbol {symbol!r}: expected a ccxt unified symbol such as "
                            "'BTC/USDT' or 'BTC/USDT:USDT'")
    return symbol


def _items(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise InvalidArgument(f"{what} must be a list of strings, got {type(value).__name__} "
                              f"{symbol_label(value)!r}" + (f" (did you mean [{value!r}]?)" if isinstance(value, str)
                                                            else ""))
    return list(value)


def validate_symbols(value: Any, what: str = "symbols") -> list[str]:
    """A list of valid symbols (None: an empty list); a bare string is refused, not split into letters."""
    return [validate_symbol(s) for s in _items(value, what)]


def validate_names(value: Any, what: str) -> list[str]:
    """A list of non-empty strings such as model types (None: an empty list)."""
    items = _items(value, what)
    for item in items:
        if not isinstance(item, str) or not item or not item.isprintable():
            raise InvalidArgument(f"{what} must be a list of non-empty strings; got the item {symbol_label(item)!r}")
    return items
