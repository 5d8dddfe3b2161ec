"""E-RL² (Stadie et al. 2018, as DREAM's baseline): RL² over DREAM's two-phase trial (an
exploration episode, then exploitation episodes; `metarl.envs.dream_grid`) with only the
exploitation episodes' rewards optimised. The recurrent policy reads everything the trial shows
(the exploration episode's observations and rewards included) and its memory spans the whole trial;
PPO's objective counts the rewards of episodes >= 1 alone (`RL2Config.counted_from_episode = 1`),
so exploring pays only through what it lets the later episodes earn.

Learner: our recurrent PPO (`algos.rl2`) where the reference trains a recurrent dueling double
DQN; the presets are RL²'s, with rewards counted from episode 1.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from metarl.algos.base import register
from metarl.algos.rl2 import PRESETS as RL2_PRESETS
from metarl.algos.rl2 import RL2, RL2Config
from metarl.errors import ConfigError

PRESETS: dict[str, RL2Config] = {name: dataclasses.replace(config, counted_from_episode=1) for name, config in RL2_PRESETS.items()}


@register
@dataclasses.dataclass(frozen=True)
class ERL2(RL2):
    """E-RL². `make("e-rl2", env, 1 + exploitation episodes, ...)` on a two-phase family."""

    name = "e-rl2"
    presets: ClassVar[dict[str, RL2Config]] = PRESETS

    config: RL2Config = PRESETS["reference"]

    def __post_init__(self):
        if not getattr(self.env, "two_phase", False):
            raise ConfigError(f"e-rl2: needs a two-phase family (city, distraction, map, cooking); {self.env.name} has no exploration phase")
        if self.episodes < 2:
            raise ConfigError(f"e-rl2: a trial needs an exploration episode and at least one exploitation episode (episodes >= 2), got {self.episodes}")
        if self.config.counted_from_episode != 1:
            raise ConfigError("e-rl2: counts the exploitation episodes' rewards (counted_from_episode = 1); for other settings use rl2")
        super().__post_init__()
