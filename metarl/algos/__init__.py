"""Meta-RL algorithms. Importing this package registers every algorithm."""

from metarl.algos.base import Algorithm, algorithm_class, make, names, register
from metarl.algos import rl2  # noqa: F401  (registration)
from metarl.algos import first_explore  # noqa: F401  (registration)
from metarl.algos import ppo  # noqa: F401  (registration)
from metarl.algos import dqn  # noqa: F401  (registration)
from metarl.algos import erl2  # noqa: F401  (registration)
from metarl.algos import dream  # noqa: F401  (registration)
from metarl.algos import import_rl  # noqa: F401  (registration)
from metarl.algos import varibad  # noqa: F401  (registration)

__all__ = ["Algorithm", "algorithm_class", "make", "names", "register"]
