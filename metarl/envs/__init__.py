"""Task families, the registry and the trial. Importing this package registers every family."""

from metarl.envs import bandit, contextual, dark_treasure_room, dream_grid, fixed_arm_bandit, gymnax_family, lunarlander, ray_maze, tabular_mdp  # noqa: F401  (registration)
from metarl.envs.base import Environment
from metarl.envs.registry import family_class, jitted_names, make, names, option_fields, register
from metarl.envs.trial import TimeStep, Trial, TrialState

__all__ = ["Environment", "TimeStep", "Trial", "TrialState", "family_class", "jitted_names", "make", "names", "option_fields", "register"]
