"""Symbols and symbol lists as requests carry them: refused with a reason before anything is written."""

from __future__ import annotations

import pytest

from brain_tasks.errors import DataError
from brain_tasks.market.symbols import (
    InvalidArgument,
    InvalidSymbol,
    symbol_label,
    validate_names,
    validate_symbol,
    validate_symbols,
)


@pytest.mark.parametrize("symbol", ["ETH/BTC", "BTC/USDT:USDT", "BTC/USD:BTC-240628", "1000PEPE/USDT"])
def test_unified_symbols_pass_unchanged(symbol: str) -> None:
    assert validate_symbol(symbol) == symbol


@pytest.mark.parametrize("symbol, reason", [
    ("ETH\x00/BTC", r"control character \\x00 at position 3"),
    ("ETH/BTC\n", r"control character \\n at position 7"),
    ("\x1b[31mETH/BTC", r"control character \\x1b at position 0"),
    ("ETH/BTC\u200b", r"control character \\u200b"),
    ("", "empty"),
    ("A" * 40 + "/" + "B" * 24, "65 characters, at most 64"),
    ("ETH-BTC", "expected a ccxt unified symbol"),
    ("BTC/USDT'; DROP TABLE candles; --", "invalid symbol"),
    (None, "a symbol is a string, not NoneType"),
    (42, "not int"),
])
def test_bad_symbols_are_refused_with_a_reason(symbol: object, reason: str) -> None:
    with pytest.raises(InvalidSymbol, match=reason) as info:
        validate_symbol(symbol)
    assert isinstance(info.value, DataError) and info.value.check == "invalid_symbol"
    assert "\x00" not in str(info.value)  # the message itself can be stored and printed


def test_a_label_is_storable_whatever_the_symbol() -> None:
    assert symbol_label("ETH\x00/BTC") == "ETH\\x00/BTC"
    assert symbol_label(["ETH/BTC"]) == "['ETH/BTC']"
    long = symbol_label("X" * 500)
    assert len(long) == 64 and long.endswith("…")
    assert symbol_label("ETH/BTC") == "ETH/BTC"


def test_a_string_where_a_list_belongs_is_refused_not_split_into_letters() -> None:
    with pytest.raises(InvalidArgument, match=r"symbols must be a list of strings, got str 'ETH/BTC' "
                                              r"\(did you mean \['ETH/BTC'\]\?\)"):
        validate_symbols("ETH/BTC")
    with pytest.raises(InvalidArgument, match="got dict"):
        validate_symbols({"ETH/BTC": 1})
    with pytest.raises(InvalidSymbol, match="control character"):
        validate_symbols(["ETH/BTC", "LTC\x00/BTC"])
    assert validate_symbols(None) == [] and validate_symbols(("ETH/BTC",)) == ["ETH/BTC"]
    assert validate_names(["lightgbm", "baseline"], "models") == ["lightgbm", "baseline"]
    with pytest.raises(InvalidArgument, match="models must be a list of strings"):
        validate_names("lightgbm", "models")
    with pytest.raises(InvalidArgument, match="non-empty strings"):
        validate_names(["lightgbm", ""], "models")
