"""metarl: meta-reinforcement learning in JAX."""

from metarl.envs import Trial, TimeStep, make
from metarl.errors import CheckpointError, ConfigError, MetarlError

__version__ = "0.1.0"
__all__ = ["CheckpointError", "ConfigError", "MetarlError", "TimeStep", "Trial", "make", "__version__"]
