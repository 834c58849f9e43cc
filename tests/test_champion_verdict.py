"""A champion that loses to flat says so on every surface, and the sizer's rows are not ranked among
the models (issue 25, item 6).

Found as: after the demo, ETH/BTC's champion had an out-of-sample Sharpe of -6.09 and -26.9% against
+4.3% for buy-and-hold, shown like any champion by the dashboard, `models` and the report; the
"Latest comparison" table mixed ppo_sizer / sign_sizing / vol_target_sizing into the model ranking,
so its ranks read 1, 1, 1, 2, 2, ...

The choice: a version that loses to flat is still promoted (it is the reference the next candidate is
measured against, and the regime classifier's anchor) but it is marked "not tradeable: loses to flat";
what trades is the per-regime choice, which is flat wherever nothing beat flat with enough evidence.
"""

from __future__ import annotations

import datetime as dt
import re

from click.testing import CliRunner
from fastapi.testclient import TestClient

from brain_tasks.brain import registry
from brain_tasks.brain.db import make_engine
from brain_tasks.brain.migrate import upgrade
from brain_tasks.cli import main
from brain_tasks.dashboard import create_app
from brain_tasks.ml.metrics import loses_to_flat
from brain_tasks.ml.sizing import SIZERS
from brain_tasks.report import load_symbol, write_report
from brain_tasks.settings import Settings, from_environ, get_settings
from brain_tasks.vocabulary import LOSES_TO_FLAT
from brain_tasks.service.steps import sizer as sizer_step
from tests.chains import run_chain
from tests.test_jobs import _load
from tests.test_sizer_step import trading

DAY = dt.date(2018, 1, 30)
TOKEN = "t" * 32


def test_a_losing_champion_is_marked_everywhere_and_sizers_rank_apart(sqlite_url, tmp_path, monkeypatch):
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    settings = from_environ({"BRAIN_DATABASE_URL": sqlite_url, "BRAIN_SIZER_TIMESTEPS": "2048"})
    _load(engine, "ETH/BTC")
    state = run_chain(engine, settings, "ETH/BTC", ["baseline"], DAY)
    assert state.ok, state
    champion = registry.champion(engine, "ETH/BTC")
    wf = registry.metrics_of(engine, "ETH/BTC", champion.model_type, champion.version)["all"]
    assert loses_to_flat(wf), wf  # the sample's finding: the champion loses to not trading
    # Nothing that lost to flat trades: every regime's choice is flat.
    assert not any(c["tradeable"] for c in registry.regime_choice(engine, "ETH/BTC").values())
    # A sizer is trained only where a regime trades (issue 26): an operator's choice to trade the champion
    # gives the sizer rows whose ranking must stay apart from the models'.
    state = sizer_step.train_sizer(engine, settings, trading(engine, state))
    assert state.sizer is not None and state.sizer.ok, state

    # `brain-tasks models`
    monkeypatch.setenv("BRAIN_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(main, ["models", "--symbol", "ETH/BTC"])
    finally:
        get_settings.cache_clear()
    assert out.exit_code == 0, out.output
    assert f"ETH/BTC: champion baseline v1 is {LOSES_TO_FLAT}" in out.output and "vs_flat" in out.output

    # The dashboard: the symbol page, its API and the overview.
    client = TestClient(create_app(Settings(database_url=sqlite_url, exchange="freqtrade", home=tmp_path / "h",
                                            dashboard_token=TOKEN)))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    detail = client.get("/api/symbols/ETH/BTC", headers=auth).json()
    assert detail["champion"]["verdict"] == LOSES_TO_FLAT
    models = [c["model_type"] for c in detail["comparisons"]]
    assert not set(models) & set(SIZERS) and {"baseline", "flat", "buy_and_hold"} <= set(models)
    assert [c["rank"] for c in detail["comparisons"]] == list(range(1, len(models) + 1))
    assert sorted(c["model_type"] for c in detail["sizing"]) == sorted(SIZERS)
    assert [c["rank"] for c in detail["sizing"]] == [1, 2, 3] and detail["sizing"][0]["is_best"]
    # Importance leads with what measures predictive value (issue 25, item 10): permutation, not mean |SHAP|.
    assert set(detail["importance"]["methods"]) == {"permutation"}
    page = client.get("/symbols/ETH/BTC", headers=auth).text
    assert 'id="champion-verdict"' in page and 'id="sizing"' in page
    rows = client.get("/api/overview", headers=auth).json()["rows"]
    assert [r["champion_verdict"] for r in rows if r["symbol"] == "ETH/BTC"] == [LOSES_TO_FLAT]

    # The report.
    assert load_symbol(engine, "ETH/BTC").importance_method == "permutation"
    html = write_report(engine, tmp_path / "report").read_text()
    assert html.count(LOSES_TO_FLAT) >= 2  # the overview row and the symbol's section
    section = html[html.index("<h3>Model comparison"):html.index("<h3>Model per regime")]
    models_part, sizing_part = section.split("<h4>Position sizing</h4>")
    ranks = [int(r) for r in re.findall(r"<tr[^>]*><td[^>]*>(\d+)</td>", models_part)]
    assert ranks == list(range(1, len(ranks) + 1)) and len(ranks) >= 3
    assert not any(s in models_part for s in SIZERS) and all(s in sizing_part for s in SIZERS)
