"""Meta-RL algorithms. Importing this package registers every algorithm."""

from metarl.algos.base import Algorithm, algorithm_class, make, names, register

__all__ = ["Algorithm", "algorithm_class", "make", "names", "register"]
