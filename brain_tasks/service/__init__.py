"""The service layer: the work behind the tasks, with no Celery in it.

`steps/` holds one module per step of a symbol's chain; `serving` decides a bar; `reconcile`
re-drives lost chains; `news` collects news and social feeds; `embedded` runs a worker in-process
for the embedded default.  Everything reads and writes the Brain through `brain_tasks.brain`.
"""
