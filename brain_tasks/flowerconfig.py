"""Flower's settings for the Brain: `celery -A brain_tasks flower --conf=brain_tasks/flowerconfig.py`.

Flower executes this file (tornado's config-file format: module-level names are its options).
- `/metrics` is served without authentication by Flower 2.0 (its handler lacks the `authenticated`
  guard its pages have): it is guarded here with the same basic auth / OAuth as the pages.
- The task list shows each task's arguments, where the symbol is, next to its name and state.
"""

import tornado.web
from flower.views.monitor import Metrics

if not getattr(Metrics.get, "brain_authenticated", False):
    Metrics.get = tornado.web.authenticated(Metrics.get)
    Metrics.get.brain_authenticated = True

tasks_columns = "name,uuid,state,args,kwargs,received,started,runtime,worker"
