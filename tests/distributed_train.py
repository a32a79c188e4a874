"""One training process for tests/test_train_distributed.py, started by torchrun:
`python -m torch.distributed.run --standalone --nproc_per_node N tests/distributed_train.py DATASET RUN SETTINGS
[STOP_AFTER]` (SETTINGS: TrainConfig as JSON). With STOP_AFTER the run stops after that many epochs as
a kill would and is then resumed in the same processes. Not collected by pytest (no test_ prefix)."""

import json
import sys

import torch

from pipeline.model.train import TrainConfig, train

if __name__ == "__main__":
    torch.set_num_threads(1)
    dataset, run, settings, *stop = sys.argv[1:]
    cfg = TrainConfig.from_dict(json.loads(settings))
    if stop:
        train(dataset, run, cfg, progress=False, stop_after_epochs=int(stop[0]))
    train(dataset, run, cfg, progress=False)
