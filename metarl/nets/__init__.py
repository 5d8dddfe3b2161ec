"""Flax modules: recurrent cores and the RL² actor-critic."""

from metarl.nets.recurrent import (
    GRUCore,
    LSTMCore,
    RL2ActorCritic,
    initial_carry,
    rl2_features,
    sequence,
    step,
)

__all__ = ["GRUCore", "LSTMCore", "RL2ActorCritic", "initial_carry", "rl2_features", "sequence", "step"]
