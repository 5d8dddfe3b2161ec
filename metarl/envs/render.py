"""GIFs of rollouts for families that render (`env.render(params, state) -> uint8 [H, W, 3]`).

Host-side helpers for a run's `videos/` folder; the stepping is jitted, the drawing is numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np
from PIL import Image

from metarl.envs.base import Environment
from metarl.errors import ConfigError


def episode_frames(
    key: jax.Array,
    env: Environment,
    params: Any,
    actions: Sequence[int] | Callable[[jax.Array, jax.Array], int],
    steps: int | None = None,
) -> tuple[list[np.ndarray], list[float]]:
    """Frames of one episode of one (unbatched) task: the reset state, then the state after each
    step, until the episode ends or `steps` (default: the episode's length) steps are taken.

    `actions` is a sequence of actions or a policy `policy(key, obs) -> action`. Returns the frames
    (uint8 [H, W, 3] each) and the reward of each step."""
    if not hasattr(env, "render"):
        raise ConfigError(f"task family {env.name!r} does not render")
    steps = env.max_steps_in_episode if steps is None else steps
    if not callable(actions):
        steps = min(steps, len(actions))
    key_reset, key = jax.random.split(key)
    obs, state = env.reset(key_reset, params)
    step = jax.jit(env.step)
    frames, rewards = [env.render(params, state)], []
    for t in range(steps):
        key_act, key_step = jax.random.split(jax.random.fold_in(key, t))
        action = actions(key_act, obs) if callable(actions) else actions[t]
        obs, state, reward, terminated, truncated, _ = step(key_step, state, action, params)
        done = terminated | truncated
        frames.append(env.render(params, state))
        rewards.append(float(reward))
        if bool(done):
            break
    return frames, rewards


def save_gif(path: str | Path, frames: Sequence[np.ndarray], frame_ms: int = 250, scale: int = 1) -> Path:
    """Write `frames` (uint8 [H, W, 3] each) as a looping GIF, each frame shown `frame_ms`
    milliseconds, enlarged `scale` times (nearest neighbour). Returns the path."""
    if not frames:
        raise ConfigError("save_gif: no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
    if scale != 1:
        images = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images]
    images[0].save(path, save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return path


def save_episode_gif(
    key: jax.Array,
    path: str | Path,
    env: Environment,
    params: Any,
    actions: Sequence[int] | Callable[[jax.Array, jax.Array], int],
    frame_ms: int = 250,
) -> Path:
    """`episode_frames` then `save_gif`: one episode of `params` as a GIF at `path`."""
    frames, _ = episode_frames(key, env, params, actions)
    return save_gif(path, frames, frame_ms)


def trial_frames(agent: Any, params: Any, trial: Any, task: Any, key: jax.Array) -> list[list[np.ndarray]]:
    """Frames of one trial of `agent` (greedy or not, as built) on `task`, one list per episode:
    each episode's first state, then the state after each of its steps (the last one before the
    trial resets the next episode). A host loop over the jitted agent and trial steps (a picture
    per step is drawn on the host anyway)."""
    env = trial.env
    if not hasattr(env, "render"):
        raise ConfigError(f"task family {env.name!r} does not render")
    key_reset, key = jax.random.split(key)
    timestep, state = jax.jit(trial.reset)(key_reset, task)
    carry = agent.init(key_reset)
    act, trial_step, env_step = jax.jit(agent.act), jax.jit(trial.step), jax.jit(env.step)
    episodes = [[env.render(task, state.env_state)]]
    for t in range(trial.episodes * env.max_steps_in_episode):
        key_act, key_step = jax.random.split(jax.random.fold_in(key, t))
        action, carry = act(params, carry, timestep, key_act)
        after = env_step(key_step, state.env_state, action, task)[1]  # the trial's own step (same key), before its reset
        timestep, state, _, info = trial_step(key_step, state, action)
        episodes[-1].append(env.render(task, after))
        if bool(info["trial_done"]):
            break
        if bool(info["terminated"] | info["truncated"]):
            episodes.append([env.render(task, state.env_state)])
    return episodes
