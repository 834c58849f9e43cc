"""Market data: sources (ccxt exchanges, freqtrade and plain files, a synthetic market) and data quality.

Pure: no Celery, no SQL.  `brain_tasks.service.steps.collect` joins a source, the checks and the Brain tables.
"""
