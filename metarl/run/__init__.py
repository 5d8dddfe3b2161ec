"""The host loop shared by every algorithm: run folders, logging, checkpoints, resume, evaluation.

    from metarl.run import train, evaluate_run
    result = train(algo, TrainSettings(total_steps=1_000_000, out_dir="runs/b5", seeds=3))
    summary = evaluate_run("runs/b5", tasks=1000)
"""

from metarl.run.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from metarl.run.evaluation import evaluate_run
from metarl.run.loop import TrainingDiverged, TrainResult, init_keys, train
from metarl.run.settings import TrainSettings

__all__ = [
    "TrainResult",
    "TrainingDiverged",
    "TrainSettings",
    "evaluate_run",
    "init_keys",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
