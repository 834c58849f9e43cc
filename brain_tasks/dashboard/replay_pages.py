"""The replay pages (`/replays`, `/replays/{replay_id}`) and their JSON routes (`/api/replays`,
`/api/replays/{replay_id}`), added to the dashboard's app by `create_app`.

They read `replay_view` (shaped from `brain/replays.py`), behind the same authentication middleware as
every other route; a finished replay's detail is kept in a small cache (`replay_view.DetailCache`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from brain_tasks.service import replay_view
from brain_tasks.brain.replays import POOLED

LIST_LIMIT = 50


def add_replay_routes(app: FastAPI, engine: sa.Engine, page: Callable[..., HTMLResponse],
                      to_json: Callable[[Any], JSONResponse]) -> None:
    """Register the replay pages and API routes on `app`; `page` renders a template, `to_json` answers
    JSON without NaN."""
    cache = replay_view.DetailCache()

    def detail_or_404(replay_id: str, symbol: str) -> dict[str, Any]:
        detail = replay_view.replay_detail(engine, replay_id, symbol or POOLED, cache=cache)
        if detail is None:
            raise HTTPException(404, f"no replay {replay_id!r}")
        if not detail["pooled"] and detail["symbol"] not in {s["symbol"] for s in detail["symbols"]}:
            raise HTTPException(404, f"replay {replay_id!r} has no symbol {symbol!r}")
        return detail

    @app.get("/replays", response_class=HTMLResponse, include_in_schema=False)
    def replays_html(request: Request) -> HTMLResponse:
        return page(request, "replays.html", replays=replay_view.replay_list(engine, LIST_LIMIT), title="Replays")

    @app.get("/replays/{replay_id}", response_class=HTMLResponse, include_in_schema=False)
    def replay_html(request: Request, replay_id: str, symbol: str = POOLED) -> HTMLResponse:
        d = detail_or_404(replay_id, symbol)
        return page(request, "replay.html", d=d, columns=replay_view.STAT_COLUMNS,
                    title=f"Replay {replay_id}", pooled_symbol=POOLED)

    @app.get("/api/replays", tags=["api"])
    def api_replays(limit: int = Query(LIST_LIMIT, ge=1, le=500)) -> JSONResponse:
        """The newest replays: symbols, models, window, step length, state, and a headline (the pooled
        PBO, the best policy and its DSR, brain's pooled Sharpe)."""
        return to_json(replay_view.replay_list(engine, limit))

    @app.get("/api/replays/{replay_id}", tags=["api"])
    def api_replay(replay_id: str, symbol: str = Query(POOLED, description="a symbol of the replay, or * for "
                                                                           "the pooled equal-weight portfolio")
                   ) -> JSONResponse:
        """One replay, pooled or for one symbol: each policy's statistics (Sharpe with its HAC standard
        error, Sortino, max drawdown, total return, turnover, time in market, hit ratio, profit factor,
        p-value of the Sharpe difference against brain), the DSR of the best policy, the PBO with its
        blocks, every policy's equity curve, and the brain policy's per-regime timeline with its
        promotions and rollbacks."""
        return to_json(detail_or_404(replay_id, symbol))
