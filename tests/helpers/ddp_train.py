"""Run by tests/test_distributed.py under torchrun: the same train_classifier call on every rank.

Each rank writes its trained weights and history to OUT/rank<N>.pt, so the test can check that
DDP kept the ranks' weights identical and that they stopped together.
"""

import sys
from pathlib import Path

import numpy as np
import torch

from mdsdys.classify.classifier import CellSample
from mdsdys.classify.train import ClsTrainConfig, train_classifier
from mdsdys.compute import process_group
from mdsdys.demo.synth import generate_cell
from mdsdys.schemes import scheme_from_folders


def main(out: Path) -> None:
    rng = np.random.default_rng(0)
    samples = [CellSample(generate_cell(rng, code, 40)[0], code, "SYN-1", k)
               for k, code in enumerate(["EN", "GN"] * 24)]
    # One epoch of several steps: with more epochs each rank may keep a different best epoch,
    # as BatchNorm statistics (not weights) differ between ranks; only rank 0's model is kept.
    config = ClsTrainConfig(input_size=32, epochs=1, batch_size=16, patience=1)
    with process_group() as world:
        result = train_classifier(samples, scheme_from_folders("syn2", ["EN", "GN"]), config)
        params = {name: p.detach().cpu() for name, p in result.classifier.net.named_parameters()}
        torch.save({"world": world.size, "params": params, "epochs": len(result.history),
                    "trained_on": result.checkpoint["trained_on"]}, out / f"rank{world.rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
