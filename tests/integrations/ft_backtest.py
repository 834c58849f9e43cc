"""Run `freqtrade backtesting` (freqtrade's own CLI entry point) offline, inside the freqtrade venv, and
write its trades as JSON for the test that compares them with the Brain's replay.

    python ft_backtest.py MARKETS_JSON OUT_JSON -- <freqtrade backtesting arguments>

The one thing patched: the exchange's market list.  freqtrade loads it from the exchange's API at
start-up, and this machine has no internet; the test writes the markets of its synthetic pairs (ccxt's
unified market structure, as freqtrade's own tests do with their fixtures) and this runner hands them
to ccxt instead of the network call.  Candles, mark prices, funding, leverage tiers (binance's file
shipped with freqtrade), the backtest loop and the trade accounting are freqtrade's, unpatched.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    markets_file, out_file, sep, *ft_args = argv
    assert sep == "--", "usage: ft_backtest.py MARKETS_JSON OUT_JSON -- ARGS"
    markets = json.loads(Path(markets_file).read_text())

    from freqtrade.exchange.exchange import Exchange

    def offline_markets(self: Exchange, reload: bool = False) -> None:
        self._api_async.set_markets(markets)

    Exchange._load_async_markets = offline_markets  # type: ignore[method-assign]

    from freqtrade.main import main as freqtrade_main

    export_dir = Path(out_file).parent / "backtest_results"
    export_dir.mkdir(parents=True, exist_ok=True)
    try:
        freqtrade_main(["backtesting", *ft_args, "--export", "trades", "--backtest-directory", str(export_dir),
                        "--cache", "none"])
    except SystemExit as exc:
        if exc.code not in (0, None):
            return int(exc.code) if isinstance(exc.code, int) else 1

    if not any(export_dir.iterdir()):
        print("freqtrade wrote no backtest result", file=sys.stderr)
        return 3
    from freqtrade.data.btanalysis import load_backtest_data, load_backtest_stats

    trades = load_backtest_data(export_dir)
    stats = load_backtest_stats(export_dir)
    strategy = next(iter(stats["strategy"].values()))
    rows = [{"pair": t.pair, "is_short": bool(t.is_short), "open_date": t.open_date.isoformat(),
             "close_date": t.close_date.isoformat(), "open_rate": float(t.open_rate),
             "close_rate": float(t.close_rate), "profit_ratio": float(t.profit_ratio),
             "profit_abs": float(t.profit_abs), "stake_amount": float(t.stake_amount),
             "exit_reason": str(t.exit_reason), "fee_open": float(t.fee_open), "fee_close": float(t.fee_close),
             "funding_fees": float(getattr(t, "funding_fees", 0.0) or 0.0)}
            for t in trades.itertuples()]
    per_pair = {r["key"]: {"trades": r["trades"], "profit_total_abs": r["profit_total_abs"]}
                for r in strategy["results_per_pair"] if r["key"] != "TOTAL"}
    Path(out_file).write_text(json.dumps({"trades": rows, "per_pair": per_pair,
                                          "stake_amount": strategy.get("stake_amount")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
