"""BRAIN_DEVICE and the optional queue of sequence-model training (no GPU here: the CPU path runs,
the CUDA path is checked for how it refuses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from brain_tasks.ml.deep import resolve_device
from brain_tasks.ml.models import SEQUENCE_TYPES, make_trainer
from brain_tasks.settings import from_environ
from tests.workers import REPO


def test_brain_device_is_read_and_checked() -> None:
    assert from_environ({}).device == "auto"
    assert from_environ({"BRAIN_DEVICE": "cuda"}).device == "cuda"
    with pytest.raises(ValueError, match="BRAIN_DEVICE"):
        from_environ({"BRAIN_DEVICE": "tpu"})


def test_devices_resolve_to_the_cpu_without_a_gpu() -> None:
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError):
        make_trainer("lstm", device="gpu")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto") == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        resolve_device("cuda")
    # XGBoost is asked for the GPU only by an explicit `cuda`.
    assert make_trainer("xgboost", device="cuda").params["device"] == "cuda"
    assert "device" not in make_trainer("xgboost", device="auto").params


def _route(env: dict[str, str]) -> dict[str, str]:
    code = ("import json; from brain_tasks.app import app; r = app.amqp.router; "
            "print(json.dumps({m: r.route({}, 'brain_tasks.train_symbol', args=['ETH/BTC', m, None])['queue'].name "
            "for m in ('lstm', 'cnn', 'transformer', 'lightgbm')} | "
            "{'kw': r.route({}, 'brain_tasks.train_symbol', kwargs={'symbol': 'E', 'model_type': 'cnn'})['queue'].name,"
            " 'importance': r.route({}, 'brain_tasks.compute_importance')['queue'].name}))")
    base = {k: v for k, v in os.environ.items() if not k.startswith("BRAIN_")}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                         cwd=REPO, check=True)
    return json.loads(out.stdout)


def test_sequence_model_training_can_have_a_queue_of_its_own() -> None:
    from brain_tasks.celeryconfig import SEQUENCE_MODEL_TYPES

    assert SEQUENCE_MODEL_TYPES == SEQUENCE_TYPES
    gpu = _route({"BRAIN_BROKER_URL": "redis://127.0.0.1:1/0", "BRAIN_DEEP_QUEUE": "train_gpu"})
    assert gpu == {"lstm": "train_gpu", "cnn": "train_gpu", "transformer": "train_gpu", "lightgbm": "train",
                   "kw": "train_gpu", "importance": "train"}
    plain = _route({"BRAIN_BROKER_URL": "redis://127.0.0.1:1/0"})
    assert set(plain.values()) == {"train"}
