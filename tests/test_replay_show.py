"""`replay show --json` caps and filters its decisions, saying how many there are, and the pooled replay
page reads only the decisions it draws (every symbol's promotions and rollbacks), on real PostgreSQL and
SQLite, over a replay written as the engine writes one (tests/replay_rows.py)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from brain_tasks.brain import replays
from brain_tasks.brain.db import make_engine
from brain_tasks.cli import main
from brain_tasks.service import replay_view
from brain_tasks.settings import get_settings
from tests.replay_rows import POLICIES, REPLAY_ID, SYMBOLS, write_replay

CONTRACT = {"symbol", "step", "policy", "regime", "model_type", "version", "action", "reason"}


def _show(url: str, monkeypatch, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("BRAIN_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(main, ["replay", "show", REPLAY_ID, "--json", *args])
    finally:
        get_settings.cache_clear()
    return out.exit_code, out.output


def test_show_caps_and_filters_its_decisions_and_says_so(brain_db_url, monkeypatch):
    write_replay(make_engine(brain_db_url))
    n = len(SYMBOLS) * 4 * len(POLICIES)  # symbols x steps x policies

    code, out = _show(brain_db_url, monkeypatch)
    shown = json.loads(out)
    assert code == 0 and {"replay_id", "policies", "pbo", "dsr", "decisions"} <= set(shown)
    assert shown["decisions_total"] == n and not shown["decisions_truncated"]
    # brain lists its five regimes, every other policy its fallback only.
    assert len(shown["decisions"]) == len(SYMBOLS) * 4 * (5 + len(POLICIES) - 1)
    assert all(set(d) >= CONTRACT for d in shown["decisions"])

    code, out = _show(brain_db_url, monkeypatch, "--decisions", "3")
    capped = json.loads(out)
    assert code == 0 and capped["decisions_total"] == n and capped["decisions_truncated"]
    # The first three (symbol, step, policy) decisions, each listed once per regime.
    assert sorted({(d["symbol"], d["step"], d["policy"]) for d in capped["decisions"]}) == [
        (SYMBOLS[0], "2024-03-01", p) for p in sorted(POLICIES)[:3]]
    assert len(capped["decisions"]) == 1 + 5 + 1 and capped["decisions"] == shown["decisions"][:7]
    assert capped["policies"] == shown["policies"] and capped["pbo"] == shown["pbo"]

    code, out = _show(brain_db_url, monkeypatch, "--symbol", SYMBOLS[1], "--decisions", "all")
    one = json.loads(out)
    assert code == 0 and one["decisions_total"] == n // 2 and not one["decisions_truncated"]
    assert {d["symbol"] for d in one["decisions"]} == {SYMBOLS[1]}

    code, out = _show(brain_db_url, monkeypatch, "--decisions", "0")
    assert code == 0 and json.loads(out)["decisions"] == [] and json.loads(out)["decisions_truncated"]
    for bad in ("-1", "many"):
        code, out = _show(brain_db_url, monkeypatch, "--decisions", bad)
        assert code == 2 and "--decisions" in out


def test_the_pooled_page_reads_only_the_decisions_it_draws(brain_db_url, monkeypatch):
    engine = make_engine(brain_db_url)
    write_replay(engine)
    # What the page drew when it read every decision: every symbol's brain events.
    everything = replays.decisions(engine, REPLAY_ID, policy="brain")
    expected = sorted(({"symbol": s, **e} for s in SYMBOLS
                       for e in replay_view.timeline([d for d in everything if d["symbol"] == s], None)["events"]),
                      key=lambda e: (e["at"], e["symbol"]))
    read: list[int] = []
    original = replays.event_decisions
    monkeypatch.setattr(replays, "decisions", lambda *a, **k: (_ for _ in ()).throw(AssertionError("read all")))
    monkeypatch.setattr(replays, "event_decisions", lambda *a, **k: read.append(len(rows := original(*a, **k))) or rows)
    detail = replay_view.replay_detail(engine, REPLAY_ID)
    assert read == [len(SYMBOLS) * 2]  # a promotion and a live rollback per symbol, nothing else
    assert [(e["symbol"], e["kind"], e["step"]) for e in detail["events"]] == [
        (e["symbol"], e["kind"], e["step"]) for e in expected]
    assert detail["timeline"] is None
