"""The packaged Alembic migrations build exactly the schema of models.py, on both backends."""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from brain_tasks.brain.db import make_engine
from brain_tasks.brain.migrate import current_revision, head_revision, upgrade
from brain_tasks.brain.tables import TABLE_NAMES, Base


def _schema(url: str) -> dict[str, object]:
    insp = sa.inspect(make_engine(url))
    return {
        name: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(name)],
            insp.get_pk_constraint(name),
            sorted(insp.get_unique_constraints(name), key=lambda u: u["name"] or ""),
            # A partial index's WHERE comes back as a fresh TextClause each time: compare its text.
            [{**ix, "dialect_options": {k: str(v) for k, v in ix.get("dialect_options", {}).items()}}
             for ix in insp.get_indexes(name)],
        )
        for name in sorted(insp.get_table_names())
    }


def _diff(url: str) -> list[object]:
    with make_engine(url).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, Base.metadata)


CONTRACT_TABLES = {  # DESIGN.md: the original Brain Library's eleven, then the ones this project added
    "liquidations", "funding_rates", "open_interest", "sentiment_scores", "feature_importance", "model_comparisons",
    "model_registry", "model_metrics", "data_quality_logs", "model_manifests", "rollback_logs",
    "candles", "model_artifacts", "training_runs", "feature_drift", "champion_history", "regime_choices"}


def test_the_brain_has_every_contract_table() -> None:
    assert CONTRACT_TABLES <= set(TABLE_NAMES)


def test_fresh_database_has_no_revision(db_url: str) -> None:
    assert current_revision(db_url) is None


def test_every_table_exists_after_upgrade(db_url: str) -> None:
    upgrade(db_url)
    tables = set(sa.inspect(make_engine(db_url)).get_table_names())
    assert set(TABLE_NAMES) <= tables
    assert tables - set(TABLE_NAMES) == {"alembic_version"}
    assert current_revision(db_url) == head_revision()


def test_migrated_schema_equals_models(db_url: str) -> None:
    upgrade(db_url)
    assert _diff(db_url) == []


def test_diff_detects_a_schema_that_differs(db_url: str) -> None:
    # Guards the test above: compare_metadata must see a dropped column.
    upgrade(db_url)
    with make_engine(db_url).begin() as conn:
        conn.execute(sa.text("ALTER TABLE candles DROP COLUMN volume"))
    assert any("volume" in repr(d) for d in _diff(db_url))


def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    upgrade(db_url)
    before = (current_revision(db_url), _schema(db_url))
    upgrade(db_url)
    assert (current_revision(db_url), _schema(db_url)) == before


def test_upgrade_works_from_any_directory(db_url: str, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    upgrade(db_url)
    assert current_revision(db_url) == head_revision()


def test_concurrent_upgrades_both_succeed(db_url: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(db_url)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert current_revision(db_url) == head_revision()
    assert _diff(db_url) == []


def test_new_revision_writes_nothing_when_models_match_head() -> None:
    from brain_tasks.brain.migrate import new_revision

    versions = Path(__file__).resolve().parents[2] / "brain_tasks" / "brain" / "migrations" / "versions"
    before = sorted(p.name for p in versions.glob("*.py"))
    assert new_revision("no change") is None
    assert sorted(p.name for p in versions.glob("*.py")) == before
