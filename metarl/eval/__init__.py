"""The evaluation protocol (`evaluate`), statistics (`stats`), and reports (`report`)."""

from metarl.eval import stats
from metarl.eval.evaluate import evaluate, run_trial
from metarl.eval import report  # noqa: E402  (imports stats and evaluate)

__all__ = ["evaluate", "report", "run_trial", "stats"]
