"""The in-context agent interface shared by learned agents and classical baselines.

    init(key) -> carry
    act(params, carry, timestep, key) -> (action, carry)

`params` are the agent's learned parameters (None for baselines). `carry` is everything the agent
remembers within a trial (a recurrent state, visit counts, a posterior). `timestep` is a
`metarl.envs.TimeStep` for one trial; agents are written for one trial and vmapped by callers.

A *privileged* agent (the Oracle) is given the task as its `params` by the evaluator; no other
agent ever sees the task. An agent with `reads_context = True` sees the task's context vector
(`env.context(task)`, e.g. physical parameters) in `TimeStep.context`, and nothing else of it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax

from metarl.envs.base import Environment
from metarl.envs.trial import TimeStep


@dataclasses.dataclass(frozen=True)
class Agent:
    """Base class: a frozen (hashable) dataclass of static settings; all methods pure."""

    name: ClassVar[str] = ""
    privileged: ClassVar[bool] = False
    #: shown its task's `env.context(task)` in `TimeStep.context` (explicit-context agents); not privileged
    reads_context: ClassVar[bool] = False

    env: Environment
    episodes: int  #: n, episodes in a trial (some agents plan over the trial's horizon)

    def init(self, key: jax.Array) -> Any:
        raise NotImplementedError

    def act(self, params: Any, carry: Any, timestep: TimeStep, key: jax.Array) -> tuple[jax.Array, Any]:
        raise NotImplementedError

    def hparams(self) -> dict[str, Any]:
        """The agent's hyperparameters (every field but env and episodes), JSON-able."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("env", "episodes")}

    def label(self) -> str:
        hp = self.hparams()
        return self.name if not hp else f"{self.name}(" + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in hp.items()) + ")"
