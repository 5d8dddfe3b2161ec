"""First-Explore (Norman & Clune): two context-conditioned policies, explore and exploit, on one
causal transformer, trained by self-imitation.

The context of both policies is every earlier *explore* episode of the task; exploit episodes never
enter it. One task's training rollout (the reference's `train_exploit_explore`): for i = 0..n-1,
explore episode i (context: explore episodes 0..i-1), then an exploit episode whose context is
explore episodes 0..i. Losses (cross-entropy on the sampled actions, summed over an episode's
steps, averaged over tasks, the sum over the n pairs divided by n), with `best` the best return so
far in the task (explore and exploit episodes alike, starting at `initial_best`):

    exploit weight of pair i = [exploit_return_i >= best] (* (1 + exploit_return_i - best) if weighted)
    explore weight of pair i = [exploit_return_i >  best] (* the same factor)
    best = max(best, explore_return_i, exploit_return_i)

so the explore policy imitates explore episodes whose information let the exploit policy beat the
best so far. The always-exploit control (`always_exploit=True`) has only the exploit policy, its
own episodes form the context and it imitates episodes whose return is >= the best so far.

Rollouts use a *rollout* copy of the parameters, refreshed every `refresh_every` updates; before
the first refresh actions are uniformly random (the reference's sampling temperature 0). As in the
reference the cross-entropy is taken on `stop_gradient(rollout_logits) + logits`, which makes the
trained policy's logits estimate log E[weight | action] whatever the rollout policy was.

At test time the agent explores for k episodes then exploits for the rest of the n; `choose_k`
picks the k maximising the expected cumulative reward over the n episodes on training tasks.

Defaults: the reference bandit run (hidden 128, 4 heads, 3 layers, AdamW lr 1e-4 with 10% warm-up
then linear decay, weight decay 1e-4, element-wise gradient clip 0.25, 128 tasks per update,
refresh every 10k updates, 200k updates).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from metarl.agents import Agent
from metarl.algos.base import InContextAlgorithm, TrainState, adamw, agent_from_config, register, sample_or_greedy
from metarl.envs.trial import TimeStep, Trial
from metarl.errors import ConfigError, check, check_float, check_int
from metarl.rollout import rollout
from metarl.nets.transformer import CausalTransformer, Tokens, episode_mask, forward_heads, init_params, step

RULES = ("all", "explore")  #: self-imitation rules (`FirstExploreConfig.best`, `self_imitation_weights`)
LAYOUTS = ("episode", "pull")  #: token layouts (`FirstExploreConfig.layout`)
_TRASH_SLOT = 1 << 20  # slot id of the cache's trash cell: never read by any query
_CHOOSE_K_STREAM = 0x6B  # fold_in constant: the training tasks `agent_params` chooses k on


@dataclasses.dataclass(frozen=True)
class FirstExploreConfig:
    """First-Explore settings. Defaults: the reference bandit run (use layers=4 and 1M updates for
    the treasure room and the maze, the "reference-room" preset)."""

    hidden: int = 128  #: transformer width
    heads: int = 4  #: attention heads (must divide hidden)
    layers: int = 3  #: transformer blocks
    batch_tasks: int = 128  #: tasks (whole rollouts) per update
    total_updates: int | None = 200_000  #: updates of the learning-rate schedule (None: the run's own, set by the host loop from --steps)
    lr: float = 1e-4  #: peak AdamW learning rate
    warmup_fraction: float = 0.1  #: fraction of total_updates warming the lr up from 0 (then linear decay to 0)
    weight_decay: float = 1e-4  #: AdamW decoupled weight decay
    grad_clip: float = 0.25  #: clip every gradient element to [-c, c] (optax.clip, as the reference); 0: off
    refresh_every: int = 10_000  #: copy the parameters into the rollout parameters every this many updates; uniformly random rollouts before the first copy
    rollout_temperature: float = 1.0  #: the rollout policy's logits are multiplied by this after the first refresh
    rollout_epsilon: float = 0.0  #: rollouts act uniformly at random with this probability (the reference bandit run: 0.05)
    best: str = "all"  #: "all": best so far over earlier explore and exploit episodes (treasure-room rule); "explore": over explore episodes only (bandit rule)
    weighted: bool = True  #: scale the self-imitation weights by 1 + (return - best so far)
    initial_best: float | None = 0.0  #: best-so-far return before a task's first episode (None: minus infinity)
    always_exploit: bool = False  #: the always-exploit control: one exploit policy whose own episodes form the context
    greedy: bool = False  #: the test-time agent acts by the most likely action instead of sampling
    choose_k_tasks: int = 256  #: training tasks `agent_params` chooses k on
    layout: str = "episode"  #: "episode": a start token and a closing token per episode (the room network); "pull": one token per pull, the reference's bandit network (one-step episodes only)
    complementary_heads: bool = False  #: the reference bandit network's "non-explore"/"non-exploit" heads: every sample trains a head, the policy head when its weight is 1, the complementary head when 0 (unweighted rules only)
    fused: bool = True  #: one-step episodes: exploit i and explore i + 1 share one network step (the same context), and training reads exploit i at explore i + 1's start token (same logits as False, about 3x fewer sequential steps)

    def __post_init__(self):
        o = "first-explore"
        check_int(o, "hidden", self.hidden, low=1, high=65536)
        check_int(o, "heads", self.heads, low=1, high=self.hidden)
        check(self.hidden % self.heads == 0, f"{o}: heads must divide hidden, got hidden={self.hidden}, heads={self.heads}")
        check_int(o, "layers", self.layers, low=1, high=64)
        check_int(o, "batch_tasks", self.batch_tasks, low=1)
        if self.total_updates is not None:
            check_int(o, "total_updates", self.total_updates, low=1)
        check_float(o, "lr", self.lr, low=0.0, low_open=True)
        check_float(o, "warmup_fraction", self.warmup_fraction, low=0.0, high=1.0, high_open=True)
        check_float(o, "weight_decay", self.weight_decay, low=0.0)
        check_float(o, "grad_clip", self.grad_clip, low=0.0)
        check_int(o, "refresh_every", self.refresh_every, low=1)
        check_float(o, "rollout_temperature", self.rollout_temperature, low=0.0)
        check_float(o, "rollout_epsilon", self.rollout_epsilon, low=0.0, high=1.0)
        check(self.best in RULES, f"{o}: best must be one of {RULES}, got {self.best!r}")
        for name in ("weighted", "always_exploit", "greedy"):
            check(isinstance(getattr(self, name), bool), f"{o}: {name} must be true or false, got {getattr(self, name)!r}")
        if self.initial_best is not None:
            check_float(o, "initial_best", self.initial_best)
        check_int(o, "choose_k_tasks", self.choose_k_tasks, low=1)
        check(self.layout in LAYOUTS, f"{o}: layout must be one of {LAYOUTS}, got {self.layout!r}")
        for name in ("complementary_heads", "fused"):
            check(isinstance(getattr(self, name), bool), f"{o}: {name} must be true or false, got {getattr(self, name)!r}")
        check(not (self.complementary_heads and self.weighted), f"{o}: complementary_heads needs weighted=false (0/1 weights)")
        check(not (self.complementary_heads and self.always_exploit), f"{o}: complementary_heads is for explore/exploit training, not always_exploit")
        check(not (self.layout == "pull" and self.always_exploit), f"{o}: layout='pull' is the explore/exploit bandit network, not always_exploit")

    @property
    def warmup_updates(self) -> int:
        return int(self.schedule_updates * self.warmup_fraction)

    @property
    def schedule_updates(self) -> int:
        if self.total_updates is None:
            raise ConfigError(
                "first-explore: total_updates=None means the run's own length, which metarl.run.train sets; "
                "give a number of updates to use the algorithm outside it", "total_updates"
            )
        return self.total_updates


#: Named configurations. "reference": the reference bandit run (on-policy rollouts with 5% random
#: actions, unweighted, best over explore episodes from minus infinity); "reference-room": the
#: treasure-room and maze runs (rollout parameters refreshed every 10k updates, uniformly random
#: before, weighted, best over all episodes from 0); "fast": small enough to learn the 2-arm
#: fixed-arm bandit on a small CPU in about a minute; "fast-bandit": "fast" with the bandit rule.
_BANDIT_RULE = dict(refresh_every=1, rollout_epsilon=0.05, weighted=False, initial_best=None, best="explore")
PRESETS: dict[str, FirstExploreConfig] = {
    "reference": FirstExploreConfig(**_BANDIT_RULE),
    "reference-room": FirstExploreConfig(layers=4, total_updates=1_000_000),
    "fast": FirstExploreConfig(
        hidden=32, heads=2, layers=2, batch_tasks=64, total_updates=None, lr=1e-3, refresh_every=100, choose_k_tasks=256
    ),
}
PRESETS["fast-bandit"] = dataclasses.replace(PRESETS["fast"], **_BANDIT_RULE)
#: The reference's bandit network (lte_model3) on the bandit rule: one token per pull, no
#: observation or episode embedding, complementary heads (docs/first_explore_reference.md A1, A4-A6).
PRESETS["reference-bandit"] = dataclasses.replace(PRESETS["reference"], layout="pull", complementary_heads=True)


@struct.dataclass
class FirstExploreTrainState(TrainState):
    """The common fields (`algos.base.TrainState`) and the parameters rollouts act with."""

    rollout_params: Any = None  #: the parameters rollouts act with (refreshed every refresh_every updates)


# --- the self-imitation weights (unbatched, one task; callers vmap) ---------------------------------


def self_imitation_weights(
    explore_returns: jax.Array,
    exploit_returns: jax.Array,
    initial_best: float | None = 0.0,
    weighted: bool = True,
    rule: str = "all",
) -> tuple[jax.Array, jax.Array]:
    """First-Explore's weights for one task. explore_returns [n], exploit_returns [n] (the
    exploit episode that follows explore episode i) -> (explore_weights [n], exploit_weights [n]).

    rule "all" (the reference's treasure-room and maze runs): `best` is the best return of the
    earlier pairs' explore and exploit episodes; exploit i is weighted when it is >= best, explore
    i when exploit i is > best. rule "explore" (the reference's bandit runs): `best` is the best
    earlier explore return; exploit i is weighted when it is >= max(best, explore return i)
    (the best in its context), explore i when exploit i is > best (the explore episode added
    something the exploit policy could use)."""
    check(rule in RULES, f"first-explore: rule must be one of {RULES}, got {rule!r}")
    best0 = jnp.float32(-jnp.inf if initial_best is None else initial_best)

    def factor(ret, best):
        return jnp.where(jnp.isfinite(best), 1.0 + ret - best, 1.0) if weighted else 1.0

    def body(best, returns):
        explore_return, exploit_return = returns
        context_best = jnp.maximum(best, explore_return) if rule == "explore" else best
        exploit_weight = jnp.where(exploit_return >= context_best, factor(exploit_return, context_best), 0.0)
        explore_weight = jnp.where(exploit_return > best, factor(exploit_return, best), 0.0)
        best = context_best if rule == "explore" else jnp.maximum(best, jnp.maximum(explore_return, exploit_return))
        return best, (explore_weight, exploit_weight)

    _, (explore_w, exploit_w) = jax.lax.scan(body, best0, (explore_returns, exploit_returns))
    return explore_w.astype(jnp.float32), exploit_w.astype(jnp.float32)


def always_exploit_weights(returns: jax.Array, initial_best: float | None = 0.0, weighted: bool = True) -> jax.Array:
    """The always-exploit control's weights for one task: returns [n] -> weights [n]."""
    best0 = jnp.float32(-jnp.inf if initial_best is None else initial_best)

    def body(best, ret):
        factor = jnp.where(jnp.isfinite(best), 1.0 + ret - best, 1.0) if weighted else 1.0
        return jnp.maximum(best, ret), jnp.where(ret >= best, factor, 0.0)

    return jax.lax.scan(body, best0, returns)[1].astype(jnp.float32)


def cumulative_reward_by_k(explore_returns: jax.Array, exploit_returns: jax.Array) -> jax.Array:
    """Expected cumulative reward of exploring k episodes then exploiting, for k = 0..n.
    explore_returns [..., n]; exploit_returns [..., n]: the exploit episode whose context is the
    first k explore episodes, k = 0..n-1 -> [..., n + 1]."""
    n = explore_returns.shape[-1]
    explored = jnp.concatenate([jnp.zeros_like(explore_returns[..., :1]), jnp.cumsum(explore_returns, axis=-1)], axis=-1)
    exploiting = jnp.concatenate([exploit_returns * (n - jnp.arange(n)), jnp.zeros_like(exploit_returns[..., :1])], axis=-1)
    return explored + exploiting


# --- the cache layout shared by rollouts and the agent ------------------------------------------------


def _cache_layout(episodes: int, tokens_per_episode: int) -> tuple[np.ndarray, np.ndarray]:
    """Slot and position of every cache cell: context slots 0..n-1, the scratch slot n (the
    current exploit episode, overwritten by each), then one trash cell (writes nobody reads)."""
    n, S = episodes, tokens_per_episode
    slot = np.concatenate([np.repeat(np.arange(n + 1), S), [_TRASH_SLOT]]).astype(np.int32)
    position = np.concatenate([np.tile(np.arange(S), n + 1), [0]]).astype(np.int32)
    return slot, position


def _sampling_logits(logits: jax.Array, temperature: jax.Array, epsilon: Any) -> jax.Array:
    """The rollout policy's logits: `logits` x temperature, mixed with uniform actions w.p. epsilon
    (a number or traced; the loss sees the mixture's logits)."""
    sample_logits = logits * temperature
    if not (isinstance(epsilon, (int, float)) and epsilon == 0):
        mixture = (1.0 - epsilon) * jax.nn.softmax(sample_logits) + epsilon / sample_logits.shape[-1]
        sample_logits = jnp.log(mixture)
    return sample_logits


def _one(tokens: Tokens) -> Tokens:
    return jax.tree.map(lambda x: jnp.asarray(x)[None], tokens)


@dataclasses.dataclass(frozen=True)
class FirstExploreAgent(Agent):
    """The trained policies as an in-context agent: explore for k episodes, then exploit.

    params: {"network": transformer parameters, "k": int32}; `k` (static) overrides params["k"]
    when set. carry: {"cache": KVCache, "valid": [cache_len] bool, "last_step": int32}; the
    cache holds explore-episode tokens only, in slots 0..k-1; exploit episodes write into one
    scratch slot that each new exploit episode overwrites (reads of it are limited to the current
    episode by the causal mask, so it never needs clearing)."""

    name = "first-explore"

    k: int | None = None  #: explore episodes (None: params["k"], chosen by `agent_params`)
    hidden: int = 128
    heads: int = 4
    layers: int = 3
    always_exploit: bool = False
    greedy: bool = False
    layout: str = "episode"
    complementary_heads: bool = False

    def __post_init__(self):
        if self.layout == "pull" and self.env.max_steps_in_episode != 1:
            raise ConfigError(f"first-explore: layout='pull' needs one-step episodes; {self.env.name} has up to {self.env.max_steps_in_episode} steps", "layout")
        if self.k is not None:
            check_int("first-explore agent", "k", self.k, low=0, high=self.episodes)

    @property
    def tokens_per_episode(self) -> int:
        return self.env.max_steps_in_episode + 1

    @property
    def network(self) -> CausalTransformer:
        pull = self.layout == "pull"
        return CausalTransformer(
            num_actions=self.env.num_actions,
            max_positions=self.episodes + 1 if pull else self.tokens_per_episode,
            max_episodes=self.episodes + 1,
            hidden=self.hidden,
            heads=self.heads,
            layers=self.layers,
            layout=self.layout,
            complementary_heads=self.complementary_heads,
        )

    @property
    def cache_length(self) -> int:
        if self.layout == "pull":
            return self.episodes + 1
        return (self.episodes + 1) * self.tokens_per_episode + 1

    def init(self, key: jax.Array) -> Any:
        carry = {
            "cache": self.network.empty_cache(self.cache_length),
            "valid": jnp.zeros((self.cache_length,), bool),
            "last_step": jnp.int32(0),
        }
        if self.layout == "pull":
            carry["logits"] = jnp.zeros((self.env.num_actions,), jnp.float32)
        return carry

    def act(self, params: Any, carry: Any, timestep: TimeStep, key: jax.Array) -> tuple[jax.Array, Any]:
        logits, carry = self.policy_logits(params, carry, timestep)
        return sample_or_greedy(key, logits, self.greedy), carry

    def policy_logits(self, params: Any, carry: Any, timestep: TimeStep) -> tuple[jax.Array, Any]:
        """The acting policy's logits [A] at `timestep` (explore head in the first k episodes,
        exploit head after) and the next carry."""
        if self.layout == "pull":
            return self._pull_policy_logits(params, carry, timestep)
        n, S, L = self.episodes, self.tokens_per_episode, self.cache_length
        k = jnp.int32(self.k) if self.k is not None else jnp.asarray(params["k"], jnp.int32)
        cache_slot, cache_position = (jnp.asarray(a) for a in _cache_layout(n, S))
        ep, s = timestep.episode_index, timestep.step_index
        if self.always_exploit:
            context_episode, context, use_explore = jnp.bool_(True), ep, jnp.bool_(False)
            previous_in_context = jnp.bool_(True)
        else:
            context_episode = ep < k
            context, use_explore = jnp.minimum(ep, k), context_episode
            previous_in_context = ep - 1 < k
        slot = jnp.where(context_episode, ep, n)

        # The closing token of the episode that just ended, (a_T, o_T, r_T), joins the context if
        # that episode was a context episode; otherwise it goes to the trash cell.
        closing = timestep.done & ~timestep.first & previous_in_context
        closing_position = carry["last_step"] + 1
        closing_index = jnp.where(closing, (ep - 1) * S + closing_position, L - 1)
        current_index = slot * S + s
        started = s > 0
        tokens = Tokens(
            obs=jnp.stack([timestep.outcome_obs, timestep.obs]).astype(jnp.float32),
            action=jnp.stack([timestep.prev_action, jnp.where(started, timestep.prev_action, -1)]).astype(jnp.int32),
            reward=jnp.stack([timestep.prev_reward, jnp.where(started, timestep.prev_reward, 0.0)]).astype(jnp.float32),
            position=jnp.stack([closing_position, s]).astype(jnp.int32),
            episode=jnp.stack([ep - 1, context]).astype(jnp.int32),
        )
        write_index = jnp.stack([closing_index, current_index])
        valid = carry["valid"].at[closing_index].set(closing).at[current_index].set(True)
        mask = episode_mask(
            jnp.stack([ep - 1, slot]), tokens.position, jnp.stack([ep - 1, context]), cache_slot, cache_position, valid
        )
        explore_logits, exploit_logits, cache = step(self.network, params["network"], carry["cache"], tokens, write_index, mask)
        logits = jnp.where(use_explore, explore_logits[1], exploit_logits[1])
        return logits, {"cache": cache, "valid": valid, "last_step": s.astype(jnp.int32)}

    def _pull_policy_logits(self, params: Any, carry: Any, timestep: TimeStep) -> tuple[jax.Array, Any]:
        """The pull layout: token j is the empty token (j = 0) or explore pull j - 1's (action,
        reward), at index j; the policy of pull e reads token min(e, k). Pulls e <= k feed a new
        token (the previous pull was an explore pull); after k the context is fixed and the
        carried logits are reused."""
        k = jnp.int32(self.k) if self.k is not None else jnp.asarray(params["k"], jnp.int32)
        ep = timestep.episode_index
        feed = ep <= k
        index = jnp.where(feed, ep, self.episodes)  # index n: a cell past the last real token
        first = ep == 0
        tokens = Tokens(
            obs=jnp.zeros((1, *self.env.obs_shape), jnp.float32),
            action=jnp.where(first, -1, timestep.prev_action).astype(jnp.int32)[None],
            reward=jnp.where(first, 0.0, timestep.prev_reward).astype(jnp.float32)[None],
            position=ep.astype(jnp.int32)[None],
            episode=jnp.zeros((1,), jnp.int32),
        )
        valid = carry["valid"].at[index].set(carry["valid"][index] | feed)
        mask = (valid & (jnp.arange(self.cache_length) <= index))[None]
        explore_logits, exploit_logits, cache = step(self.network, params["network"], carry["cache"], tokens, index[None], mask)
        cache = jax.tree.map(lambda new, old: jnp.where(feed, new, old), cache, carry["cache"])
        logits = jnp.where(ep < k, explore_logits[0], exploit_logits[0])
        logits = jnp.where(feed, logits, carry["logits"])
        return logits, {**carry, "cache": cache, "valid": valid, "logits": logits}


@register
@dataclasses.dataclass(frozen=True)
class FirstExplore(InContextAlgorithm):
    """First-Explore. `FirstExplore(env, episodes, FirstExploreConfig(...))` or
    `make("first-explore", env, n, ...)`."""

    name = "first-explore"
    Config = FirstExploreConfig
    presets: ClassVar[dict[str, FirstExploreConfig]] = PRESETS  #: named configs ("reference", "reference-room", "fast")
    State = FirstExploreTrainState
    update_keys = 2  #: the update's tasks; their rollouts

    config: FirstExploreConfig = FirstExploreConfig()

    @classmethod
    def default_preset(cls, env, episodes=None):
        if env.max_steps_in_episode == 1:
            return "fast-bandit", "one-step episodes: the reference's bandit rule on the small network"
        return "fast", "multi-step episodes: the reference's treasure-room rule on the small network"

    def for_run(self, total_updates, saved_config=None):
        return self.with_run_length("total_updates", total_updates, saved_config)

    def __post_init__(self):
        super().__post_init__()
        if not self.env.discrete:
            raise ConfigError(f"first-explore: needs a family with discrete actions; {self.env.name} has {type(self.env.action_space()).__name__} actions")
        if self.config.layout == "pull" and self.env.max_steps_in_episode != 1:
            raise ConfigError(f"first-explore: layout='pull' needs one-step episodes; {self.env.name} has up to {self.env.max_steps_in_episode} steps", "layout")

    # --- derived sizes ------------------------------------------------------------------------
    @property
    def steps_per_episode(self) -> int:
        return self.env.max_steps_in_episode

    @property
    def tokens_per_episode(self) -> int:
        return self.steps_per_episode + 1

    @property
    def one_step_path(self) -> bool:
        """Rollouts and training take the one-step path (`_rollout_one_step`, `_one_step_loss`):
        one-step episodes with `fused` or the pull layout, explore/exploit training."""
        c = self.config
        return self.steps_per_episode == 1 and not c.always_exploit and (c.fused or c.layout == "pull")

    @property
    def steps_per_update(self) -> int:
        pairs = 1 if self.config.always_exploit else 2
        return self.config.batch_tasks * self.episodes * pairs * self.steps_per_episode

    @property
    def network(self) -> CausalTransformer:
        return self.agent().network

    def optimizer(self) -> optax.GradientTransformation:
        c = self.config
        warmup = c.warmup_updates
        schedule = optax.join_schedules(
            [
                optax.linear_schedule(0.0, c.lr, max(warmup, 1)),
                optax.linear_schedule(c.lr, 0.0, max(c.schedule_updates - warmup, 1)),
            ],
            [warmup],
        )
        return adamw(schedule, weight_decay=c.weight_decay, clip_value=c.grad_clip)

    # --- the interface ------------------------------------------------------------------------
    def agent(self, k: int | None = None) -> FirstExploreAgent:
        """The test-time agent; k None: read k from `agent_params` (chosen on training tasks)."""
        return agent_from_config(FirstExploreAgent, self.env, self.episodes, self.config, k=k)

    def agent_params(self, train_state: FirstExploreTrainState) -> Any:
        """{"network": params, "k": k chosen on `choose_k_tasks` training tasks}."""
        return {"network": train_state.params, "k": self._chosen_k(train_state.params, train_state.key)}

    @functools.partial(jax.jit, static_argnums=0)
    def _chosen_k(self, params: Any, key: jax.Array) -> jax.Array:
        if self.config.always_exploit:
            return jnp.int32(0)
        key = jax.random.fold_in(jnp.asarray(key, jnp.uint32), _CHOOSE_K_STREAM)
        key_tasks, key_rollout = jax.random.split(key)
        tasks = self.env.sample_tasks(key_tasks, self.config.choose_k_tasks)
        return jnp.argmax(self._k_estimates(params, tasks, key_rollout)).astype(jnp.int32)

    def init_params(self, key_params: jax.Array) -> Any:
        return init_params(self.network, key_params, self.env.obs_shape)

    def init_extra(self, params: Any, *keys: jax.Array) -> dict[str, Any]:
        return {"rollout_params": params}

    # --- rollouts -----------------------------------------------------------------------------
    def _episode(self, params, cache, valid, task, key, slot, context, use_explore: bool, commit: bool, temperature, greedy=False, epsilon=0.0):
        """One episode of one task (a one-episode `Trial` through `metarl.rollout`), written into
        `slot` of the cache. Returns (cache, valid, record) with record: tokens [S], token_valid
        [S], action [T], sample_logits [T, A], acted [T], reward [T]. A committed episode's
        closing token is written too (one more scan step, whose action is discarded)."""
        net, T, S = self.network, self.steps_per_episode, self.tokens_per_episode
        L = cache.length
        cache_slot, cache_position = (jnp.asarray(a) for a in _cache_layout(self.episodes, S))
        slot, context = jnp.asarray(slot, jnp.int32), jnp.asarray(context, jnp.int32)
        key_reset, key_steps = jax.random.split(key)
        trial = Trial(self.env, 1)
        timestep, state = trial.reset(key_reset, task)

        def policy(pstate, ts, key_act, t):
            cache, valid, ended = pstate  # ended: the episode ended before the previous step
            live = ~ended  # this token exists (its (a, o, r) comes from a step of the episode)
            alive = ~(ended | ts.done)  # this step belongs to the episode
            token = Tokens(
                ts.outcome_obs.astype(jnp.float32),
                jnp.where(ts.first, -1, ts.prev_action).astype(jnp.int32),
                ts.prev_reward,
                t,
                context,
            )
            index = jnp.where(live, slot * S + t, L - 1)
            valid = valid.at[index].set(live)
            mask = episode_mask(slot[None], t[None], context[None], cache_slot, cache_position, valid)
            explore_logits, exploit_logits, cache = step(net, params, cache, _one(token), index[None], mask)
            logits = (explore_logits if use_explore else exploit_logits)[0]
            sample_logits = _sampling_logits(logits, temperature, epsilon)
            action = jnp.argmax(logits) if greedy else jax.random.categorical(key_act, sample_logits)
            out = {"token": token, "token_valid": live, "sample_logits": sample_logits, "acted": alive}
            return action.astype(jnp.int32), (cache, valid, ended | ts.done), out

        def record(s):
            return {**s.out, "action": s.action, "reward": jnp.where(s.info["valid"], s.reward, 0.0)}

        length = T + 1 if commit else T  # the extra step only writes the closing token
        pstate = (cache, valid, jnp.bool_(False))
        (_, _, (cache, valid, _), _), rec = rollout(trial, policy, pstate, timestep, state, jax.random.split(key_steps, length), record=record)
        record = {
            "tokens": rec["token"],
            "token_valid": rec["token_valid"],
            "action": rec["action"][:T],
            "sample_logits": rec["sample_logits"][:T],
            "acted": rec["acted"][:T],
            "reward": rec["reward"][:T],
        }
        if not commit:  # pad the token sequence to S with an invalid copy of the last token
            record["tokens"] = jax.tree.map(lambda x: jnp.concatenate([x, x[-1:]]), record["tokens"])
            record["token_valid"] = jnp.concatenate([record["token_valid"], jnp.zeros((1,), bool)])
        return cache, valid, record

    def rollout_task(
        self, params: Any, task: Any, key: jax.Array, temperature: jax.Array, exploit_first: bool = False, greedy: bool = False, epsilon: float = 0.0
    ):
        """One task's rollout. Returns {"explore": records [n, ...], "exploit": records [n, ...]}
        (no "exploit" for always-exploit, whose context episodes are under "explore"). The
        exploit episode i has explore episodes 0..i in its context, or 0..i-1 when
        `exploit_first` (what `choose_k` needs: contexts 0..n-1)."""
        if self.one_step_path:
            return self._rollout_one_step(params, task, key, temperature, exploit_first, greedy, epsilon)
        n, S = self.episodes, self.tokens_per_episode
        L = (n + 1) * S + 1
        cache = self.network.empty_cache(L)
        valid = jnp.zeros((L,), bool)
        scratch = jnp.int32(n)

        def body(loop, xs):
            cache, valid = loop
            i, key_i = xs
            key_explore, key_exploit = jax.random.split(key_i)
            if self.config.always_exploit:
                cache, valid, rec = self._episode(params, cache, valid, task, key_explore, i, i, False, True, temperature, greedy, epsilon)
                return (cache, valid), {"explore": rec}
            if exploit_first:
                cache, valid, exploit = self._episode(params, cache, valid, task, key_exploit, scratch, i, False, False, temperature, greedy, epsilon)
            cache, valid, explore = self._episode(params, cache, valid, task, key_explore, i, i, True, True, temperature, greedy, epsilon)
            if not exploit_first:
                cache, valid, exploit = self._episode(params, cache, valid, task, key_exploit, scratch, i + 1, False, False, temperature, greedy, epsilon)
            return (cache, valid), {"explore": explore, "exploit": exploit}

        _, records = jax.lax.scan(body, (cache, valid), (jnp.arange(n, dtype=jnp.int32), jax.random.split(key, n)))
        return records

    def _rollout_one_step(self, params, task, key, temperature, exploit_first: bool, greedy: bool, epsilon):
        """`rollout_task` for one-step episodes in n + 1 network steps. Step j feeds explore pull
        j - 1's closing token and explore pull j's start token (episode layout; the pull layout
        feeds one token, pull j - 1's (action, reward)); the start token's explore logits act
        for explore pull j, its exploit logits for the exploit pull with context 0..j - 1 (the
        same tokens: the exploit query of context j is explore pull j's start token, so it is
        recorded as the exploit pull's token). Keys, resets and steps are those of the episode
        path, so with a constant first observation (the bandits) the records are the same."""
        n, S = self.episodes, self.tokens_per_episode
        net, trial, pull = self.network, Trial(self.env, 1), self.config.layout == "pull"
        L = n + 1 if pull else (n + 1) * S + 1
        cache_slot, cache_position = (jnp.asarray(a) for a in _cache_layout(n, S))

        def episode_keys(k, length):  # what `_episode` does with its key: (reset key, act key, env key)
            key_reset, key_steps = jax.random.split(k)
            key_act, key_env = jax.random.split(jax.random.split(key_steps, length)[0])
            return key_reset, key_act, key_env

        pair_keys = jax.vmap(jax.random.split)(jax.random.split(key, n))  # [n, 2]: explore, exploit
        explore_keys = jax.vmap(lambda k: episode_keys(k, S))(pair_keys[:, 0])
        exploit_keys = jax.vmap(lambda k: episode_keys(k, 1))(pair_keys[:, 1])
        explore_ts, explore_state = jax.vmap(lambda k: trial.reset(k, task))(explore_keys[0])
        exploit_ts, exploit_state = jax.vmap(lambda k: trial.reset(k, task))(exploit_keys[0])

        def start_token(j):  # explore pull j's start token; j = n: the last exploit query (its own reset)
            ts = jax.tree.map(lambda a, b: jnp.where(j < n, a[jnp.minimum(j, n - 1)], b[n - 1]), explore_ts, exploit_ts)
            return Tokens(ts.outcome_obs.astype(jnp.float32), jnp.int32(-1), ts.prev_reward, jnp.int32(0), j)

        def act(logits, keys, ts_state, i):
            key_act, key_env = keys[1][i], keys[2][i]
            sample_logits = _sampling_logits(logits, temperature, epsilon)
            action = (jnp.argmax(logits) if greedy else jax.random.categorical(key_act, sample_logits)).astype(jnp.int32)
            state = jax.tree.map(lambda x: x[i], ts_state)
            next_ts, _, reward, info = trial.step(key_env, state, action)
            return action, sample_logits, jnp.where(info["valid"], reward, 0.0), next_ts

        def body(carry, j):
            cache, valid, closing = carry  # closing: explore pull j - 1's closing token
            start = start_token(j)
            if pull:
                token = Tokens(jnp.zeros_like(start.obs), jnp.where(j > 0, closing.action, -1), jnp.where(j > 0, closing.reward, 0.0), j, jnp.int32(0))
                tokens, index = _one(token), j[None]
                valid = valid.at[j].set(True)
                mask = (valid & (jnp.arange(L) <= j))[None]
            else:
                tokens = jax.tree.map(lambda a, b: jnp.stack([a, b]), closing, start)
                index = jnp.stack([jnp.where(j > 0, (j - 1) * S + 1, L - 1), j * S])
                valid = valid.at[index[0]].set(j > 0).at[index[1]].set(True)
                mask = episode_mask(jnp.stack([j - 1, j]), tokens.position, tokens.episode, cache_slot, cache_position, valid)
            explore_logits, exploit_logits, cache = step(net, params, cache, tokens, index, mask)
            e = jnp.minimum(j, n - 1)
            action, explore_sample, explore_reward, next_ts = act(explore_logits[-1], explore_keys, explore_state, e)
            closing = Tokens(next_ts.outcome_obs.astype(jnp.float32), next_ts.prev_action.astype(jnp.int32), next_ts.prev_reward, jnp.int32(1), e)
            x = jnp.clip(j if exploit_first else j - 1, 0, n - 1)
            exploit_action, exploit_sample, exploit_reward, _ = act(exploit_logits[-1], exploit_keys, exploit_state, x)
            out = {
                "explore": {"start": start, "closing": closing, "action": action, "sample_logits": explore_sample, "reward": explore_reward},
                "exploit": {"start": start, "action": exploit_action, "sample_logits": exploit_sample, "reward": exploit_reward},
            }
            return (cache, valid, closing), out

        zero = Tokens(jnp.zeros(self.env.obs_shape, jnp.float32), jnp.int32(-1), jnp.float32(0.0), jnp.int32(1), jnp.int32(0))
        init = (net.empty_cache(L), jnp.zeros((L,), bool), zero)
        _, out = jax.lax.scan(body, init, jnp.arange(n + 1, dtype=jnp.int32))
        ex, xp = (jax.tree.map(lambda a: a[:n], out["explore"]),
                  jax.tree.map(lambda a: a[:n] if exploit_first else a[1:], out["exploit"]))
        ones = jnp.ones((n, 1), bool)
        explore = {
            "tokens": jax.tree.map(lambda a, b: jnp.stack([a, b], axis=1), ex["start"], ex["closing"]),
            "token_valid": jnp.ones((n, S), bool),
            "action": ex["action"][:, None], "sample_logits": ex["sample_logits"][:, None], "acted": ones, "reward": ex["reward"][:, None],
        }
        exploit = {
            "tokens": jax.tree.map(lambda a: jnp.stack([a, a], axis=1), xp["start"]),
            "token_valid": jnp.concatenate([ones, ~ones], axis=1),
            "action": xp["action"][:, None], "sample_logits": xp["sample_logits"][:, None], "acted": ones, "reward": xp["reward"][:, None],
        }
        return {"explore": explore, "exploit": exploit}

    def _k_estimates(self, params: Any, tasks: Any, key: jax.Array) -> jax.Array:
        """[n + 1] mean cumulative reward over the n episodes of exploring k then exploiting."""
        num = jax.tree.leaves(tasks)[0].shape[0]
        rollout = jax.vmap(lambda task, k: self.rollout_task(params, task, k, jnp.float32(1.0), True, self.config.greedy))
        records = rollout(tasks, jax.random.split(key, num))
        explore = records["explore"]["reward"].sum(-1)  # [tasks, n]
        exploit = records["exploit"]["reward"].sum(-1)
        return jnp.mean(cumulative_reward_by_k(explore, exploit), axis=0)

    # --- training -----------------------------------------------------------------------------
    def _task_loss(self, params: Any, records: Any):
        """Self-imitation loss of one task's rollout -> (loss, stats)."""
        c, net = self.config, self.network
        n, S, T = self.episodes, self.tokens_per_episode, self.steps_per_episode
        groups = ["explore"] if c.always_exploit else ["explore", "exploit"]
        # Training layout: context slots 0..n-1 (S tokens each, the closing token included), then
        # exploit slots n..2n-1 (their first T tokens: an exploit episode's closing token is never
        # valid, so it is left out); exploit i reads the first i + 1 context slots, the same
        # semantics as the rollout's scratch slot.
        length = {"explore": S, "exploit": T}
        first_context = {"explore": 0, "exploit": 1}
        parts = [jax.tree.map(lambda x, g=g: x[:, : length[g]].reshape((n * length[g],) + x.shape[2:]), records[g]["tokens"]) for g in groups]
        tokens = jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
        token_valid = jnp.concatenate([records[g]["token_valid"][:, : length[g]].reshape(-1) for g in groups])
        slot = jnp.asarray(np.concatenate([np.repeat(np.arange(n) + i * n, length[g]) for i, g in enumerate(groups)]))
        position = jnp.asarray(np.concatenate([np.tile(np.arange(length[g]), n) for g in groups]))
        context = jnp.asarray(np.concatenate([np.repeat(np.arange(n) + first_context[g], length[g]) for g in groups]))
        if self.one_step_path:
            logits = self._one_step_logits(params, records)
        else:
            mask = episode_mask(slot, position, context, slot, position, token_valid)
            heads = forward_heads(net, params, tokens, mask)
            # always-exploit trains the exploit head on the explore group's episodes
            keep = (lambda h: "exploit" in h) if c.always_exploit else (lambda h: "explore" in h)
            logits = {"explore": {h: x[: n * S].reshape(n, S, -1)[:, :T] for h, x in heads.items() if keep(h)}}
            if not c.always_exploit:
                logits["exploit"] = {h: x[n * S :].reshape(n, T, -1) for h, x in heads.items() if "exploit" in h}

        def episode_ce(logits, rec):
            ce = optax.softmax_cross_entropy_with_integer_labels(jax.lax.stop_gradient(rec["sample_logits"]) + logits, rec["action"])
            return jnp.sum(ce * rec["acted"], axis=-1)  # [n]

        returns = {g: records[g]["reward"].sum(-1) for g in groups}
        if c.always_exploit:
            w = always_exploit_weights(returns["explore"], c.initial_best, c.weighted)
            ce = episode_ce(logits["explore"]["exploit"], records["explore"])
            loss = jnp.sum(w * ce) / n
            return loss, {"exploit_loss": loss, "exploit_weight": jnp.mean(w), "exploit_return": jnp.mean(returns["explore"])}
        explore_w, exploit_w = self_imitation_weights(returns["explore"], returns["exploit"], c.initial_best, c.weighted, c.best)
        explore_loss, explore_complement = complementary_loss(
            episode_ce, logits["explore"]["explore"], logits["explore"].get("nonexplore"), records["explore"], explore_w
        )
        exploit_loss, exploit_complement = complementary_loss(
            episode_ce, logits["exploit"]["exploit"], logits["exploit"].get("nonexploit"), records["exploit"], exploit_w
        )
        stats = {
            "explore_loss": explore_loss,
            "exploit_loss": exploit_loss,
            "explore_weight": jnp.mean(explore_w),
            "exploit_weight": jnp.mean(exploit_w),
            "explore_return": jnp.mean(returns["explore"]),
            "exploit_return": jnp.mean(returns["exploit"]),
            "final_exploit_return": returns["exploit"][-1],
        }
        if c.complementary_heads:
            stats["complementary_loss"] = explore_complement + exploit_complement
        return explore_loss + exploit_loss + explore_complement + exploit_complement, stats

    def _one_step_logits(self, params: Any, records: Any) -> dict:
        """Training logits on the one-step path: {"explore": {head: [n, 1, A]}, "exploit": ...}.
        Episode layout: the 2n explore tokens (start, closing) then exploit n - 1's query token;
        exploit i reads the start token of explore i + 1 (exploit_first never trains). Pull
        layout: the empty token then one token per explore pull; explore i reads token i,
        exploit i token i + 1."""
        n, S = self.episodes, self.tokens_per_episode
        ex = records["explore"]
        if self.config.layout == "pull":
            tokens = Tokens(
                obs=jnp.zeros((n + 1, *self.env.obs_shape), jnp.float32),
                action=jnp.concatenate([jnp.full((1,), -1, jnp.int32), ex["action"][:, 0]]),
                reward=jnp.concatenate([jnp.zeros((1,), jnp.float32), ex["reward"][:, 0]]),
                position=jnp.arange(n + 1, dtype=jnp.int32),
                episode=jnp.zeros((n + 1,), jnp.int32),
            )
            mask = jnp.tril(jnp.ones((n + 1, n + 1), bool))
            heads = forward_heads(self.network, params, tokens, mask)
        else:
            last = jax.tree.map(lambda x: x[n - 1, :1], records["exploit"]["tokens"])
            tokens = jax.tree.map(lambda x, y: jnp.concatenate([x.reshape((n * S,) + x.shape[2:]), y]), ex["tokens"], last)
            valid = jnp.concatenate([ex["token_valid"].reshape(-1), jnp.ones((1,), bool)])
            slot = jnp.asarray(np.concatenate([np.repeat(np.arange(n), S), [n]]))
            position = jnp.asarray(np.concatenate([np.tile(np.arange(S), n), [0]]))
            # only the start tokens' logits are read: the last block skips the closing tokens' rows
            heads = forward_heads(self.network, params, tokens, episode_mask(slot, position, slot, slot, position, valid), rows=np.arange(n + 1) * S)
        explore_at, exploit_at = np.arange(n), np.arange(1, n + 1)  # both layouts: explore i reads row i, exploit i row i + 1
        return {
            "explore": {h: x[explore_at][:, None] for h, x in heads.items() if "explore" in h},
            "exploit": {h: x[exploit_at][:, None] for h, x in heads.items() if "exploit" in h},
        }

    def _loss(self, params: Any, records: Any):
        losses, stats = jax.vmap(self._task_loss, in_axes=(None, 0))(params, records)
        return jnp.mean(losses), jax.tree.map(jnp.mean, stats)

    def _update(self, train_state: FirstExploreTrainState, key_tasks: jax.Array, key_rollout: jax.Array):
        c = self.config
        temperature = jnp.where(train_state.update_step >= c.refresh_every, c.rollout_temperature, 0.0).astype(jnp.float32)
        tasks = self.env.sample_tasks(key_tasks, c.batch_tasks)
        rollout = jax.vmap(lambda task, k: self.rollout_task(train_state.rollout_params, task, k, temperature, epsilon=c.rollout_epsilon))
        records = rollout(tasks, jax.random.split(key_rollout, c.batch_tasks))
        (loss, stats), grads = jax.value_and_grad(self._loss, has_aux=True)(train_state.params, records)
        new_state = self.apply_gradients(train_state, grads)
        refresh = (train_state.update_step + 1) % c.refresh_every == 0
        rollout_params = jax.tree.map(lambda new, old: jnp.where(refresh, new, old), new_state.params, train_state.rollout_params)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "rollout_temperature": temperature, **stats}
        return new_state.replace(rollout_params=rollout_params), metrics


def complementary_loss(episode_ce, logits, complement_logits, rec, w) -> tuple[jax.Array, jax.Array]:
    """(sum(w * ce(policy head)) / n, the complementary part). Without a complementary head the
    second is 0. With one (the reference bandit network, 0/1 weights): each sample's
    cross-entropy is on the policy head where w > 0, on the complementary head where w == 0, so
    every acted sample trains the trunk; the complementary part is sum(ce(complement) [w == 0]) / n."""
    n = w.shape[0]
    loss = jnp.sum(w * episode_ce(logits, rec)) / n
    if complement_logits is None:
        return loss, jnp.float32(0.0)
    return loss, jnp.sum(jnp.where(w > 0, 0.0, episode_ce(complement_logits, rec))) / n


def choose_k(algo: FirstExplore, train_state: FirstExploreTrainState, tasks: Any, key: jax.Array) -> int:
    """The number of explore episodes k in [0, n] maximising the expected cumulative reward over
    the n episodes, estimated on `tasks` (TRAINING tasks, stacked on axis 0; never the evaluation
    tasks). One rollout per task gives every k at once: exploit episode i has the first i explore
    episodes as its context, so k scores sum(explore returns[:k]) + (n - k) * exploit return[k]."""
    if algo.config.always_exploit:
        return 0
    return int(np.argmax(k_estimates(algo, train_state, tasks, key)))


def k_estimates(algo: FirstExplore, train_state: FirstExploreTrainState, tasks: Any, key: jax.Array) -> np.ndarray:
    """[n + 1] estimated mean cumulative reward of each k (what `choose_k` maximises)."""
    return np.asarray(_k_estimates_jit(algo, train_state.params, tasks, key))


@functools.partial(jax.jit, static_argnums=0)
def _k_estimates_jit(algo: FirstExplore, params: Any, tasks: Any, key: jax.Array) -> jax.Array:
    return algo._k_estimates(params, tasks, key)
