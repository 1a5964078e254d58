"""Training across processes with torch.distributed: gloo on the CPU, two processes (issue 6)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mdsdys.compute import SINGLE, agree, current_world, mean, shard
from mdsdys.demo.study import build_demo
from mdsdys.store import connect
from mdsdys.store.models import list_models

HERE = Path(__file__).resolve().parent


def torchrun(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=2 ARGS` on the CPU."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(command, env=os.environ | {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"} | (env or {}),
                          capture_output=True, text=True, timeout=600)


def test_one_process_needs_no_process_group():
    assert current_world() == SINGLE and not SINGLE.distributed and SINGLE.is_main
    batch = torch.arange(6)
    assert torch.equal(shard(batch, SINGLE), batch)
    assert agree(True, SINGLE) is True and mean(0.5, SINGLE) == 0.5


@pytest.mark.slow
def test_a_ddp_run_with_gloo_keeps_two_processes_in_step(tmp_path):
    done = torchrun(str(HERE / "helpers" / "ddp_train.py"), str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["trained_on"] == {"device": "cpu", "processes": 2}
    assert ranks[0]["epochs"] == ranks[1]["epochs"]
    first, second = ranks[0]["params"], ranks[1]["params"]
    assert first.keys() == second.keys()
    for name in first:  # averaged gradients, same start: the same weights after every step
        assert torch.allclose(first[name], second[name], atol=1e-6), name


@pytest.mark.slow
def test_the_train_command_runs_under_torchrun_and_registers_one_model(home):
    with connect(home / "labels.db") as db:
        # 14 a class: the 10 training labels a candidate needs (registry.retrain.MIN_TRAIN_PER_CLASS).
        build_demo(db, seed=0, patches_per_slide=4, with_cells=False, training_cells_per_class=14)
    settings = json.dumps({"epochs": 2, "batch_size": 8, "input_size": 32})
    done = torchrun("-m", "mdsdys", "train", "classifier", "--settings", settings,
                    env={"MDSDYS_HOME": str(home)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Classifier classifier-") == 1 and "trained by 2 processes" in done.stdout
    with connect(home / "labels.db") as db:
        models = list_models(db, "classifier")
    assert len(models) == 1 and models[0].status == "active"
    checkpoint = torch.load(models[0].path, map_location="cpu", weights_only=True)
    assert checkpoint["trained_on"] == {"device": "cpu", "processes": 2}


@pytest.mark.slow
def test_the_segmenter_trains_under_torchrun_too(home):
    with connect(home / "labels.db") as db:
        build_demo(db, seed=0, patches_per_slide=4, with_cells=False, training_cells_per_class=3)
    settings = json.dumps({"epochs": 2, "steps_per_epoch": 2, "batch_size": 2, "crop": 64, "max_seconds": None,
                           "unet": {"depth": 2, "width": 4}})
    done = torchrun("-m", "mdsdys", "train", "segmenter", "--settings", settings, env={"MDSDYS_HOME": str(home)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Segmenter segmenter-") == 1 and "trained by 2 processes" in done.stdout
    with connect(home / "labels.db") as db:
        models = list_models(db, "segmenter")
    assert len(models) == 1
    assert torch.load(models[0].path, map_location="cpu", weights_only=True)["trained_on"]["processes"] == 2
