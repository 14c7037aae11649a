"""Cohort from Python: track a training run, query the experiment catalog, run as a search
trial, and (``import cohort.torch``) a torch.distributed backend for CPU tensors.

A PyTorch script launched by ``cohort run -n N -- python train.py`` or ``srun --cohort``::

    import cohort

    tracker = cohort.Tracker.from_env()
    lr = tracker.hparams.get("lr", 0.01)
    for step in range(start, steps):
        loss = train_step(...)
        tracker.log({"loss": loss}, step)
        if tracker.should_stop(step):  # every rank, the same step
            break
    save_and_record_checkpoint(...)
    tracker.finish()
    sys.exit(tracker.exit_status)  # 75 or 143 when Slurm's warning stopped it

Outside any launcher, ``cohort.init(experiment="mnist", hparams={"lr": 0.01})`` creates a
trial, and ``with`` ends it completed, or failed with the exception's message.
"""

from ._native import (
    CatalogError,
    Checkpoint,
    CommError,
    Tracker,
    __version__,
    init,
)
from .catalog import Catalog, Experiment, Trial, Metric, Model, ModelVersion

__all__ = [
    "Catalog",
    "CatalogError",
    "Checkpoint",
    "CommError",
    "Experiment",
    "Metric",
    "Model",
    "ModelVersion",
    "Tracker",
    "Trial",
    "init",
    "__version__",
]
