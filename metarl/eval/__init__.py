"""The evaluation protocol, statistics, tables and plots."""

from metarl.eval.evaluate import evaluate, run_trial

__all__ = ["evaluate", "run_trial"]
