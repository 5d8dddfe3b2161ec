"""Small checks the test files share (tests/ is on the path: pytest's default rootdir-less import mode)."""

import jax
import numpy as np


def changed_leaves(before, after):
    """The tree of `before` with each leaf True where any entry differs in `after`: which parameters
    an update moved. Compared in numpy, so no leaf shape compiles a JAX program."""
    return jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), before, after)
