"""Optional integrations with third-party trading programs.

Each module here imports its program's library at the top and is imported only by users of that
program (`brain_tasks.integrations.freqtrade` needs `pip install brain-tasks[freqtrade]`); nothing in
the core package imports this package, so the core install gains nothing from it.
"""
