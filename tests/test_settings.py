"""Configuration: one place reads it, embedded defaults, secrets never printed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from brain_tasks.settings import Settings, from_environ
from tests.workers import REPO


def test_embedded_defaults_follow_the_design_card():
    s = from_environ({})
    assert s.database_url == "sqlite:///brain.db"
    assert s.embedded and s.effective_broker_url == "filesystem://"
    assert s.effective_result_backend.startswith("file:///")


def test_result_backend_is_derived_from_a_redis_broker():
    s = from_environ({"BRAIN_BROKER_URL": "redis://:pw@127.0.0.1:6379/0"})
    assert not s.embedded
    assert s.effective_result_backend == "redis://:pw@127.0.0.1:6379/0"
    explicit = from_environ({"BRAIN_BROKER_URL": "redis://h/0", "BRAIN_RESULT_BACKEND": "redis://h/1"})
    assert explicit.effective_result_backend == "redis://h/1"


def test_describe_never_shows_a_password():
    s = from_environ({"BRAIN_DATABASE_URL": "postgresql+psycopg://brain:hunter2@db:5432/brain",
                      "BRAIN_BROKER_URL": "redis://:hunter2@redis:6379/0"})
    text = repr(s.describe())
    assert "hunter2" not in text and "***" in text


def test_bad_time_of_day_is_a_clear_error():
    with pytest.raises(ValueError, match="HH:MM"):
        from_environ({"BRAIN_RETRAIN_AT": "25:00"})


def _celery_conf(env: dict[str, str]) -> dict:
    code = ("import json; import brain_tasks.celeryconfig as c; print(json.dumps({k: getattr(c, k) for k in dir(c) "
            "if not k.startswith('_') and isinstance(getattr(c, k), (str, int, float, bool, list, dict))}))")
    base = {k: v for k, v in __import__("os").environ.items() if not k.startswith("BRAIN_")}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                         cwd=REPO, check=True)
    import json

    return json.loads(out.stdout)


def test_celery_config_is_json_only_at_least_once_and_spawned():
    conf = _celery_conf({"BRAIN_BROKER_URL": "redis://127.0.0.1:6379/0"})
    assert conf["accept_content"] == ["json"] and conf["result_accept_content"] == ["json"]
    assert conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["worker_pool_start_method"] == "spawn"
    vt = conf["broker_transport_options"]["visibility_timeout"]
    assert vt == conf["result_backend_transport_options"]["visibility_timeout"]
    assert vt > Settings().train_time_limit and vt > conf["task_time_limit"]
    assert conf["beat_scheduler"] == "brain_tasks.beat:FailoverRedBeatScheduler"  # RedBeat, surviving failovers


def test_visibility_timeout_below_a_time_limit_is_refused():
    with pytest.raises(subprocess.CalledProcessError):
        _celery_conf({"BRAIN_BROKER_URL": "redis://h/0", "BRAIN_VISIBILITY_TIMEOUT": "60"})


def test_task_routes_send_training_to_its_own_queue():
    from brain_tasks.app import app

    router = app.amqp.router
    assert router.route({}, "brain_tasks.train_symbol")["queue"].name == "train"
    assert router.route({}, "brain_tasks.collect_candles")["queue"].name == "collect"
    assert router.route({}, "brain_tasks.compare_models")["queue"].name == "analysis"


def test_importing_the_app_does_not_load_model_libraries():
    code = "import sys, brain_tasks.client; print(any(m in sys.modules for m in ('lightgbm', 'xgboost', 'shap')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_pool_children_recycle_by_memory_and_have_time_to_start():
    conf = _celery_conf({"BRAIN_BROKER_URL": "redis://h/0"})
    assert "worker_max_tasks_per_child" not in conf  # each recycle re-imported the ML stack
    assert conf["worker_max_memory_per_child"] == 2048 * 1024  # KiB
    assert conf["worker_proc_alive_timeout"] >= 30  # a loaded machine took up to 15 s to start a child
    conf = _celery_conf({"BRAIN_BROKER_URL": "redis://h/0", "BRAIN_MAX_MEMORY_PER_CHILD_MB": "0"})
    assert "worker_max_memory_per_child" not in conf  # None: never


def test_the_bar_ratio_bound_is_read_and_checked():
    assert from_environ({}).max_bar_ratio == 100.0
    assert from_environ({"BRAIN_MAX_BAR_RATIO": "20"}).max_bar_ratio == 20.0
    with pytest.raises(subprocess.CalledProcessError):
        _celery_conf({"BRAIN_BROKER_URL": "redis://h/0", "BRAIN_MAX_BAR_RATIO": "0.5"})


def test_a_short_task_time_limit_keeps_a_usable_soft_limit():
    assert Settings(task_time_limit=600).task_soft_time_limit == 570
    assert Settings(task_time_limit=18).task_soft_time_limit == 17  # was 1 s: the fan-out task timed out
    conf = _celery_conf({"BRAIN_BROKER_URL": "redis://h/0", "BRAIN_TASK_TIME_LIMIT": "18",
                         "BRAIN_TRAIN_TIME_LIMIT": "18", "BRAIN_VISIBILITY_TIMEOUT": "20"})
    assert conf["task_soft_time_limit"] == 17


def test_the_app_ignores_a_celeryconfig_in_the_callers_working_directory(tmp_path):
    """An Engine's own celeryconfig.py (here: pickle and another broker) must not configure our app."""
    import subprocess
    import sys

    from tests.workers import REPO

    (tmp_path / "celeryconfig.py").write_text('broker_url = "memory://evil"\ntask_serializer = "pickle"\n'
                                              'accept_content = ["pickle"]\n')
    code = ("import json; from brain_tasks.app import app; c = app.conf; "
            "print(json.dumps([c.broker_url, c.task_serializer, list(c.accept_content)]))")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("BRAIN_")}
    env.update(PYTHONPATH=str(REPO), BRAIN_BROKER_URL="redis://127.0.0.1:1/0")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == ["redis://127.0.0.1:1/0", "json", ["json"]]
