"""Classical in-context agents. Importing this package registers every baseline."""

from metarl.baselines import common  # noqa: F401  (registration)
from metarl.baselines import bandit  # noqa: F401  (registration)
from metarl.baselines import mdp  # noqa: F401  (registration)
from metarl.baselines.registry import baseline_class, families, make, names, tuned_defaults

__all__ = ["baseline_class", "families", "make", "names", "tuned_defaults"]
