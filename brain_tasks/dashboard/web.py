"""The dashboard: server-rendered pages, a read-only JSON API under /api/ and Prometheus /metrics.

Pages and API read the same functions of `data.py`; the pages embed their chart data as JSON and draw
it with Plotly.js served from the installed `plotly` package (the machines are offline: no CDN).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from brain_tasks import __version__
from brain_tasks.brain import dashboard_views as dv
from brain_tasks.brain.db import make_engine, redact_url
from brain_tasks.dashboard import data
from brain_tasks.dashboard.auth import AuthConfigError, AuthMiddleware, Credentials
from brain_tasks.dashboard.prometheus import make_registry
from brain_tasks.dashboard.replay_pages import add_replay_routes
from brain_tasks.settings import Settings

HERE = Path(__file__).resolve().parent
REFRESH_MS = 2000
OVERVIEW_TTL_S = 5.0


@functools.lru_cache(maxsize=1)
def plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


def _pct(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "\u2013"
    return f"{100 * float(value):+.{digits}f}%"


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "\u2013"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.{digits}f}"


def _pvalue(value: Any) -> str:
    """p-values span many decades: tiny ones in scientific notation rather than as 0.0000."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "\u2013"
    v = float(value)
    return f"{v:.4f}" if v >= 1e-3 or v == 0 else f"{v:.1e}"


def _age(seconds: Any) -> str:
    if seconds is None:
        return "\u2013"
    s = float(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(s) >= size:
            return f"{s / size:.1f}{unit}"
    return f"{s:.0f}s"


def _when(value: Any) -> str:
    if value is None:
        return "\u2013"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def create_app(settings: Settings, *, insecure_local: bool = False, overview_ttl: float = OVERVIEW_TTL_S) -> FastAPI:
    """The dashboard over `settings.database_url`.  Refuses to build without BRAIN_DASHBOARD_AUTH or
    BRAIN_DASHBOARD_TOKEN unless `insecure_local` (the CLI then binds 127.0.0.1 only).  The overview's
    rows are read at most once per `overview_ttl` seconds (0: on every request)."""
    credentials = Credentials.parse(settings.dashboard_auth, settings.dashboard_token)
    if not credentials.configured and not insecure_local:
        raise AuthConfigError("the dashboard needs BRAIN_DASHBOARD_AUTH=user:password or BRAIN_DASHBOARD_TOKEN "
                              "(or --insecure-local, which binds 127.0.0.1 only)")
    engine = make_engine(settings.database_url)
    metrics_registry = make_registry(engine, settings)
    overview_cache = data.TtlCache(overview_ttl) if overview_ttl > 0 else None
    app = FastAPI(title="brain-tasks dashboard", version=__version__, docs_url=None, redoc_url=None,
                  description="Read-only views of the Brain tables: the same data as the dashboard's pages. "
                              "Every metric is out of sample (walk-forward folds with an embargo).")
    app.add_middleware(AuthMiddleware, credentials=credentials if credentials.configured else None)
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters.update(pct=_pct, num=_num, age=_age, when=_when, pvalue=_pvalue)
    templates.env.policies["json.dumps_function"] = _dumps
    templates.env.globals.update(database=redact_url(settings.database_url), version=__version__,
                                 refresh_ms=REFRESH_MS, max_data_age=settings.max_data_age)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, context)

    @app.get("/static-vendor/plotly.min.js", include_in_schema=False)
    def plotly() -> Response:
        return Response(plotly_js(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    # --- pages ---------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def overview_html(request: Request, q: str | None = None, tradeable: str | None = None,
                      run_state: str | None = None, stale: str | None = None, drifted: str | None = None,
                      findings: str | None = None, sort: str = "symbol", order: str = "asc", page_no: int = Query(
                          1, alias="page"), per_page: int = data.PER_PAGE) -> HTMLResponse:
        flags = {k: _flag(v) for k, v in (("stale", stale), ("drifted", drifted), ("findings", findings))}
        result = data.overview_page(engine, settings, q=q or None, tradeable=tradeable or None,
                                    run_state=run_state or None, sort=sort, order=order, page=page_no,
                                    per_page=per_page, cache=overview_cache, **flags)
        params = {k: v for k, v in dict(q=q, tradeable=tradeable, run_state=run_state, stale=stale,
                                         drifted=drifted, findings=findings, per_page=per_page).items() if v}
        return page(request, "overview.html", result=result, params=params, title="Overview")

    @app.get("/symbols/{symbol:path}", response_class=HTMLResponse, include_in_schema=False)
    def symbol_html(request: Request, symbol: str) -> HTMLResponse:
        detail = data.symbol_detail(engine, settings, symbol)
        if detail is None:
            raise HTTPException(404, f"the Brain knows nothing of {symbol!r}")
        return page(request, "symbol.html", d=detail, title=symbol)

    @app.get("/runs", response_class=HTMLResponse, include_in_schema=False)
    def runs_html(request: Request) -> HTMLResponse:
        return page(request, "runs.html", r=data.runs_overview(engine), title="Runs")

    @app.get("/runs/{run_id:path}", response_class=HTMLResponse, include_in_schema=False)
    def run_html(request: Request, run_id: str) -> HTMLResponse:
        detail = data.run_detail(engine, run_id)
        if detail is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return page(request, "run.html", run=detail, title=f"Run {run_id}")

    @app.get("/quality", response_class=HTMLResponse, include_in_schema=False)
    def quality_html(request: Request, status: str = "open", symbol: str | None = None,
                     page_no: int = Query(1, alias="page")) -> HTMLResponse:
        return page(request, "quality.html", qp=data.quality_page(engine, status=status, symbol=symbol, page=page_no),
                    title="Data quality")

    # --- API -----------------------------------------------------------------------------------

    @app.get("/api/overview", response_model=data.OverviewPage, tags=["api"])
    def api_overview(q: str | None = None, tradeable: Literal["trades", "flat", "none"] | None = None,
                     run_state: str | None = None, stale: bool | None = None, drifted: bool | None = None,
                     findings: bool | None = None, sort: data.SortKey = "symbol",
                     order: Literal["asc", "desc"] = "asc", page: int = Query(1, ge=1),
                     per_page: int = Query(data.PER_PAGE, ge=1, le=data.MAX_PER_PAGE)) -> data.OverviewPage:
        """Every symbol's champion, out-of-sample performance next to buy-and-hold, tradeability, data
        age, drift, open findings and last run state; filtered, sorted and paginated in the server."""
        return data.overview_page(engine, settings, q=q, tradeable=tradeable, run_state=run_state, stale=stale,
                                  drifted=drifted, findings=findings, sort=sort, order=order, page=page,
                                  per_page=per_page, cache=overview_cache)

    @app.get("/api/symbols", tags=["api"])
    def api_symbols() -> list[str]:
        """Every symbol the Brain knows of."""
        return dv.all_symbols(engine, dv.last_bars(engine, settings.exchange, settings.timeframe),
                              dv.last_run_states(engine))

    @app.get("/api/symbols/{symbol:path}", tags=["api"])
    def api_symbol(symbol: str) -> JSONResponse:
        """One symbol: versions and their metrics, promotions and rollbacks with reasons, per-regime
        choice, drift, importance across versions, findings, runs, served signals and the chart series."""
        detail = data.symbol_detail(engine, settings, symbol)
        if detail is None:
            raise HTTPException(404, f"the Brain knows nothing of {symbol!r}")
        return _json(detail)

    @app.get("/api/runs", tags=["api"])
    def api_runs(limit: int = Query(50, ge=1, le=500)) -> JSONResponse:
        """The newest runs (attempts) with their symbols' state counts, and recent failures with reasons."""
        return _json(data.runs_overview(engine, limit))

    @app.get("/api/runs/{run_id}", tags=["api"])
    def api_run(run_id: str) -> JSONResponse:
        """One run's attempts with every symbol's state, step and error; `done` of `total` for progress."""
        detail = data.run_detail(engine, run_id)
        if detail is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return _json(detail)

    @app.get("/api/quality", tags=["api"])
    def api_quality(status: Literal["open", "resolved", "all"] = "open", symbol: str | None = None,
                    page: int = Query(1, ge=1), per_page: int = Query(100, ge=1, le=data.MAX_PER_PAGE)) -> JSONResponse:
        """Data-quality findings, open, resolved or all, newest first."""
        return _json(data.quality_page(engine, status=status, symbol=symbol, page=page, per_page=per_page))

    add_replay_routes(app, engine, page, _json)

    @app.get("/metrics", tags=["metrics"], response_class=Response)
    def metrics() -> Response:
        """Prometheus text exposition; every name is prefixed `brain_`."""
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _flag(value: str | None) -> bool | None:
    return {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}.get((value or "").lower())


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _dumps(value: Any, **kwargs: Any) -> str:
    import json

    from fastapi.encoders import jsonable_encoder

    return json.dumps(_finite(jsonable_encoder(value)), allow_nan=False)


def _json(payload: Any) -> JSONResponse:
    from fastapi.encoders import jsonable_encoder

    return JSONResponse(_finite(jsonable_encoder(payload)))
