"""The nightly audit of served signals: FreqAI's "backtest the live models", done continuously.

Every signal served since the last audit is decided again with the same versions (the registry state
kept in its `context`) from the rows as stored now, and the verdict is stored per signal
(`brain/audits.py`): same or different, and what differs among prediction, position, regime and chosen
model.  Predictions are compared exactly: serving is bit-exact with training, so any difference is a
change of inputs or code, not noise.  When the rows changed since serving, `corrections` names them
(`serving.fingerprint`): the bar and field of a correction among the last RECENT_KEPT bars, the span of
an older one, the series of a changed external event.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import sqlalchemy as sa

from brain_tasks.brain import audits
from brain_tasks.errors import BrainError
from brain_tasks.service import serving
from brain_tasks.settings import Settings
from brain_tasks.timekeeping import now

COMPARED = ("prediction", "position", "regime", "chosen model")


def _same_number(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = float(a), float(b)
    return a == b or (math.isnan(a) and math.isnan(b))


def differences(row: dict[str, Any], again: serving.Signal) -> list[dict[str, Any]]:
    """What differs between a served signal (its stored row) and the same decision made again."""
    out = []
    served_model = [row["model_type"], int(row["version"])]
    now_model = [again.model_type, again.version or 0]
    if served_model != now_model:
        out.append({"field": "chosen model", "served": served_model, "now": now_model})
    if row["regime"] != again.regime:
        out.append({"field": "regime", "served": row["regime"], "now": again.regime})
    if not _same_number(row["prediction"], again.prediction):
        out.append({"field": "prediction", "served": row["prediction"], "now": again.prediction})
    if int(row["position"]) != int(again.position):
        out.append({"field": "position", "served": int(row["position"]), "now": int(again.position)})
    return out


def corrections(served: dict[str, Any] | None, current: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The input rows that differ between two fingerprints (`serving.fingerprint`)."""
    if not served or not current:
        return []
    out: list[dict[str, Any]] = []
    old, new = served.get("candles") or {}, current.get("candles") or {}
    recent_old = {r[0]: r[1:] for r in old.get("recent", [])}
    recent_new = {r[0]: r[1:] for r in new.get("recent", [])}
    for ts in sorted(set(recent_old) | set(recent_new)):
        a, b = recent_old.get(ts), recent_new.get(ts)
        if a is None or b is None:
            out.append({"kind": "candles", "ts": ts, "field": "bar", "served": "absent" if a is None else "stored",
                        "now": "absent" if b is None else "stored"})
            continue
        for name, x, y in zip(serving.CANDLE_FIELDS, a, b):
            if not _same_number(x, y):
                out.append({"kind": "candles", "ts": ts, "field": name, "served": x, "now": y})
    chunks_new = dict(new.get("chunks", []))
    for start, digest in old.get("chunks", []):
        if chunks_new.get(start) != digest:
            out.append({"kind": "candles", "ts": start, "field": f"a bar among the {serving.CHUNK_BARS} from here",
                        "served": digest, "now": chunks_new.get(start)})
    for kind in ("funding", "open_interest", "liquidations"):
        a, b = served.get(kind), current.get(kind)
        if a != b:
            out.append({"kind": kind, "ts": (a or b)["first"], "field": "rows",
                        "served": None if a is None else a["digest"], "now": None if b is None else b["digest"]})
    return out


def audit_symbol(engine: sa.Engine, settings: Settings, symbol: str, stamp: dt.datetime | None = None
                 ) -> dict[str, Any]:
    """Audit every signal of `symbol` served up to `stamp` (default now) and not audited yet; returns
    {"audited", "mismatches", "first_mismatch"} of this pass (the first mismatch's differences and
    corrections, for the nightly's summary)."""
    stamp = stamp or now()
    rows = audits.unaudited(engine, symbol, stamp)
    # Its own Server: the audit walks old bars in order, and its windows must not crowd the live caches.
    server = serving.Server(engine)
    out = []
    with engine.connect() as conn:
        for row in rows:
            verdict: dict[str, Any] = {k: row[k] for k in ("symbol", "ts", "model_type", "version", "served_at")}
            try:
                again = server.decide_again(conn, settings, row)
            except BrainError as exc:
                out.append({**verdict, "audited_at": stamp, "same": False, "corrections": [],
                            "differences": [{"field": "decision", "served": row["model_type"], "now": None}],
                            "note": f"could not decide again: {exc}"})
                continue
            diff = differences(row, again)
            fixed = corrections((row.get("context") or {}).get("rows"), (again.context or {}).get("rows"))
            note = ("" if row.get("context") else
                    "served before decision contexts were kept: checked against its own model and regime; ")
            note += "same decision" if not diff else "differs: " + ", ".join(d["field"] for d in diff)
            if fixed:
                note += "; rows changed since serving: " + ", ".join(
                    f"{c['kind']} {c['ts']} {c['field']}" for c in fixed[:3])
            out.append({**verdict, "audited_at": stamp, "same": not diff, "differences": diff,
                        "corrections": fixed, "note": note})
    audits.write(engine, out)
    bad = [r for r in out if not r["same"]]
    return {"audited": len(out), "mismatches": len(bad),
            "first_mismatch": None if not bad else {"ts": bad[0]["ts"].isoformat(), "note": bad[0]["note"]}}
