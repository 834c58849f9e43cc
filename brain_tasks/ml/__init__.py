"""The ML core: pure functions, no Celery and no database.

features -> labels -> validation (purged walk-forward) -> models -> metrics -> importance ->
regimes -> drift -> rollback; ``pipeline`` runs the whole per-symbol computation.
"""
