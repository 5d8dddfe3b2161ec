"""First-Explore: self-imitation weights by hand, choosing k, the agent's cache against the training
forward, configs, and learning on the 2-arm fixed-arm bandit (seeds vmapped)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl
from metarl.algos import make
from metarl.algos.first_explore import (
    PRESETS,
    FirstExplore,
    FirstExploreConfig,
    always_exploit_weights,
    choose_k,
    cumulative_reward_by_k,
    k_estimates,
    self_imitation_weights,
)
from metarl.baselines import make as make_baseline
from metarl.errors import ConfigError
from metarl.eval.evaluate import evaluate
from metarl.nets.transformer import Tokens, episode_mask, forward


# --- the self-imitation weights -------------------------------------------------------------------

EXPLORE = jnp.array([1.0, 0.0, 3.0, 0.0])
EXPLOIT = jnp.array([0.5, 2.0, 2.0, 3.0])
# best so far before each pair, from initial_best = 0: 0, max(0, 1, .5) = 1, max(1, 0, 2) = 2, max(2, 3, 2) = 3
# exploit: .5 >= 0, 2 >= 1, 2 >= 2, 3 >= 3 -> all; explore: .5 > 0, 2 > 1, 2 > 2 no, 3 > 3 no.


@pytest.mark.parametrize("jit", [False, True])
def test_self_imitation_weights_by_hand(jit):
    f = jax.jit(self_imitation_weights, static_argnums=(2, 3)) if jit else self_imitation_weights
    explore_w, exploit_w = f(EXPLORE, EXPLOIT, 0.0, False)
    np.testing.assert_array_equal(explore_w, [1, 1, 0, 0])
    np.testing.assert_array_equal(exploit_w, [1, 1, 1, 1])
    # weighted: times 1 + return - best = 1.5, 2, 1, 1
    explore_w, exploit_w = f(EXPLORE, EXPLOIT, 0.0, True)
    np.testing.assert_allclose(explore_w, [1.5, 2, 0, 0])
    np.testing.assert_allclose(exploit_w, [1.5, 2, 1, 1])
    # a negative first exploit return does not beat the initial best of 0 ...
    explore_w, exploit_w = f(jnp.array([-1.0, 0.0]), jnp.array([-0.5, -0.2]), 0.0, True)
    np.testing.assert_allclose(exploit_w, [0, 0])
    np.testing.assert_allclose(explore_w, [0, 0])
    # ... but does beat minus infinity (factor 1 there); then best = -.5, and -.2 > -.5 by .3
    explore_w, exploit_w = f(jnp.array([-1.0, 0.0]), jnp.array([-0.5, -0.2]), None, True)
    np.testing.assert_allclose(exploit_w, [1, 1.3])
    np.testing.assert_allclose(explore_w, [1, 1.3])


@pytest.mark.parametrize("jit", [False, True])
def test_self_imitation_weights_bandit_rule_by_hand(jit):
    """The reference bandit run's rule: best = best earlier EXPLORE return (from minus infinity);
    exploit i must reach max(best, explore i), explore i is credited when exploit i beats best."""
    f = jax.jit(self_imitation_weights, static_argnums=(2, 3, 4)) if jit else self_imitation_weights
    # best before each pair: -inf, 1, 1, 3; context best (with explore i): 1, 1, 3, 3
    # exploit: .5 < 1 no, 2 >= 1, 2 < 3 no, 3 >= 3; explore: .5 > -inf, 2 > 1, 2 > 1, 3 > 3 no
    explore_w, exploit_w = f(EXPLORE, EXPLOIT, None, False, "explore")
    np.testing.assert_array_equal(exploit_w, [0, 1, 0, 1])
    np.testing.assert_array_equal(explore_w, [1, 1, 1, 0])
    # weighted: exploit factors 1 + 2 - 1 = 2 and 1 + 3 - 3 = 1; explore: 1 (infinite best), 2, 2
    explore_w, exploit_w = f(EXPLORE, EXPLOIT, None, True, "explore")
    np.testing.assert_allclose(exploit_w, [0, 2, 0, 1])
    np.testing.assert_allclose(explore_w, [1, 2, 2, 0])


def test_always_exploit_weights_by_hand():
    returns = jnp.array([0.5, 0.2, 0.7, 0.7])
    # best before: 0, .5, .5, .7 -> .5 >= 0, .2 < .5, .7 >= .5, .7 >= .7
    np.testing.assert_array_equal(always_exploit_weights(returns, 0.0, False), [1, 0, 1, 1])
    np.testing.assert_allclose(always_exploit_weights(returns, 0.0, True), [1.5, 0, 1.2, 1.0])


def test_cumulative_reward_by_k_by_hand():
    # explore returns 1, 2; exploit returns with 0 and 1 explore episodes in context: .5, 3
    # k=0: 2 * .5; k=1: 1 + 1 * 3; k=2: 1 + 2
    np.testing.assert_allclose(cumulative_reward_by_k(jnp.array([1.0, 2.0]), jnp.array([0.5, 3.0])), [1.0, 4.0, 3.0])


# --- the agent's cache against the full-sequence forward -------------------------------------------

MDP = metarl.make("tabular-mdp", states=3, actions=2, horizon=3)


def _agent_trace(agent, params, n, key):
    """Run the agent on one trial; returns (timesteps [N], logits [N, A], next timesteps [N])."""
    trial = metarl.Trial(MDP, n)
    key_task, key_reset, key_steps = jax.random.split(key, 3)
    timestep, state = trial.reset(key_reset, MDP.sample_task(key_task))

    def body(loop, key_t):
        timestep, state, carry = loop
        key_act, key_env = jax.random.split(key_t)
        logits, carry = agent.policy_logits(params, carry, timestep)
        action = jax.random.categorical(key_act, logits)
        next_timestep, state, _, _ = trial.step(key_env, state, action)
        return (next_timestep, state, carry), (timestep, logits, next_timestep)

    init = (timestep, state, agent.init(key))
    return jax.lax.scan(body, init, jax.random.split(key_steps, trial.num_steps))[1]


def _forward_logits(algo, params, trace, n, k, always_exploit):
    """The same trial as one sequence, each episode in its own slot, episodes < k (all, for
    always-exploit) the context; returns the acting head's logits [N, A]."""
    timesteps, _, nexts = jax.tree.map(np.asarray, trace)
    T = MDP.max_steps_in_episode
    S = T + 1
    obs, action, reward, position, slot, context = [], [], [], [], [], []
    for e in range(n):
        ctx = e if always_exploit else min(e, k)
        for t in range(T):
            j = e * T + t
            obs.append(timesteps.obs[j])
            action.append(timesteps.prev_action[j] if t > 0 else -1)
            reward.append(timesteps.prev_reward[j] if t > 0 else 0.0)
        j = e * T + T - 1  # the closing token: what the last step led to
        obs.append(nexts.outcome_obs[j])
        action.append(nexts.prev_action[j])
        reward.append(nexts.prev_reward[j])
        position += list(range(S))
        slot += [e] * S
        context += [ctx] * S
    tokens = Tokens(
        jnp.asarray(np.stack(obs)), jnp.asarray(action, jnp.int32), jnp.asarray(reward, jnp.float32),
        jnp.asarray(position, jnp.int32), jnp.asarray(context, jnp.int32),
    )
    slot, position, context = (jnp.asarray(x, jnp.int32) for x in (slot, position, context))
    mask = episode_mask(slot, position, context, slot, position, jnp.ones(slot.shape, bool))
    explore, exploit = forward(algo.network, params, tokens, mask)
    explore, exploit = (np.asarray(x).reshape(n, S, -1)[:, :T].reshape(n * T, -1) for x in (explore, exploit))
    use_explore = (np.repeat(np.arange(n), T) < k) & (not always_exploit)
    return np.where(use_explore[:, None], explore, exploit)


@pytest.mark.parametrize("k, always_exploit, k_in_params", [pytest.param(2, False, False, marks=pytest.mark.slow), pytest.param(1, False, True, marks=pytest.mark.slow), (0, True, False)])
def test_agent_cache_equals_training_forward(k, always_exploit, k_in_params):
    """The agent (explore k episodes, then exploit, exploit steps kept out of the context) computes
    exactly the logits of the full-sequence forward on the same trial; n = 4 covers two exploit
    episodes in a row (the scratch slot is reused)."""
    n = 4
    algo = FirstExplore(MDP, n, FirstExploreConfig(hidden=16, heads=2, layers=2, always_exploit=always_exploit))
    params = algo.init(jax.random.PRNGKey(0)).params
    leaves, treedef = jax.tree.flatten(params)  # larger weights: contexts matter more to the logits
    noise = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = treedef.unflatten([x + 0.3 * jax.random.normal(kk, x.shape) for x, kk in zip(leaves, noise)])
    agent = algo.agent(None if k_in_params else k)
    trace = jax.jit(lambda p, key: _agent_trace(agent, p, n, key))({"network": params, "k": jnp.int32(k)}, jax.random.PRNGKey(2))
    expected = _forward_logits(algo, params, trace, n, k, always_exploit)
    np.testing.assert_allclose(np.asarray(trace[1]), expected, atol=2e-4, rtol=1e-4)
    # not vacuous: the context changes the logits of the first step of each episode
    first_steps = expected[:: MDP.max_steps_in_episode]
    assert np.abs(first_steps - first_steps[:1]).max() > 1e-2


# --- configs ---------------------------------------------------------------------------------------

BANDIT2 = metarl.make("fixed-arm-bandit", arms=2)


@pytest.mark.parametrize(
    "bad",
    [
        dict(hidden=30, heads=4),
        dict(heads=0),
        dict(layers=0),
        dict(lr=0.0),
        dict(warmup_fraction=1.0),
        dict(grad_clip=-1.0),
        dict(refresh_every=0),
        dict(batch_tasks=2.5),
        dict(initial_best=float("inf")),
        dict(weighted="yes"),
        dict(always_exploit=1),
        dict(rollout_epsilon=1.5),
        dict(best="exploit"),
        dict(no_such_option=3),
    ],
)
def test_bad_configs_raise(bad):
    with pytest.raises(ConfigError):
        make("first-explore", BANDIT2, 10, **bad)


@pytest.mark.slow
def test_rollout_epsilon_mixes_uniform_actions_into_the_sampling_logits():
    """sample_logits = log((1 - eps) softmax(temperature x logits) + eps / A): eps = 1 is uniform
    whatever the network says, eps = 0 leaves the logits as they are."""
    env = metarl.make("fixed-arm-bandit", arms=3)
    algo = FirstExplore(env, 3, dataclasses.replace(PRESETS["fast-bandit"], total_updates=10))
    params = algo.init(jax.random.PRNGKey(0)).params
    params = jax.tree.map(lambda x: x * 50.0, params)  # a far-from-uniform policy
    task = env.sample_task(jax.random.PRNGKey(1))
    key = jax.random.PRNGKey(2)
    logits = jax.jit(lambda eps: algo.rollout_task(params, task, key, jnp.float32(1.0), epsilon=eps)["explore"]["sample_logits"])
    plain = algo.rollout_task(params, task, key, jnp.float32(1.0))["explore"]["sample_logits"]  # epsilon 0: no mixture
    assert np.ptp(np.asarray(plain), axis=-1).max() > 1.0
    uniform = logits(1.0)
    np.testing.assert_allclose(uniform, np.log(1 / 3), rtol=1e-6)
    mixed = logits(0.25)
    # the first explore episode has no context, so its logits do not depend on earlier actions
    expected = np.log(0.75 * np.asarray(jax.nn.softmax(plain[0])) + 0.25 / 3)
    np.testing.assert_allclose(mixed[0], expected, rtol=1e-5, atol=1e-6)


def test_bad_agent_k_and_episodes_raise():
    algo = make("first-explore", BANDIT2, 10)
    with pytest.raises(ConfigError):
        algo.agent(11)
    with pytest.raises(ConfigError):
        FirstExplore(BANDIT2, 0)


def test_defaults_are_the_reference():
    c = FirstExploreConfig()
    assert (c.hidden, c.heads, c.layers, c.batch_tasks, c.total_updates) == (128, 4, 3, 128, 200_000)
    assert (c.lr, c.warmup_updates, c.weight_decay, c.grad_clip, c.refresh_every) == (1e-4, 20_000, 1e-4, 0.25, 10_000)
    assert PRESETS["reference-room"].layers == 4
    algo = make("first-explore", BANDIT2, 100)
    assert algo.steps_per_update == 128 * 100 * 2  # explore + exploit pull per episode index


# --- learning --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_learns_the_fixed_arm_bandit_and_beats_random():
    """Two seeds trained in one vmapped jit on the deceptive 2-arm bandit, n = 10 pulls. Random
    scores 10 * (.5 + 0) / 2 = 2.5 in expectation; pulling the safe arm always scores 5; trying the
    other arm once then exploiting the better scores about 6.2. k is chosen on training tasks."""
    n = 10
    config = dataclasses.replace(PRESETS["fast"], batch_tasks=32, total_updates=120, refresh_every=40)
    algo = FirstExplore(BANDIT2, n, config)
    states = jax.vmap(algo.init)(jax.random.split(jax.random.PRNGKey(0), 2))

    @jax.jit
    def train(states):
        def body(states, _):
            states, metrics = jax.vmap(algo.update)(states)
            return states, metrics["exploit_return"]

        return jax.lax.scan(body, states, None, length=config.total_updates)

    states, exploit_returns = train(states)
    assert exploit_returns.shape == (config.total_updates, 2)
    # the exploit policy's per-pull return rises above random's .25 and towards ~.7
    assert np.all(np.asarray(exploit_returns[-20:]).mean(0) > 0.45)

    train_tasks = BANDIT2.sample_tasks(jax.random.PRNGKey(10), 256)
    test_tasks = BANDIT2.sample_tasks(jax.random.PRNGKey(11), 500)
    random_total = evaluate(make_baseline("random", BANDIT2, n), None, BANDIT2, test_tasks, n, jax.random.PRNGKey(12)).sum(1)
    for seed in range(2):
        state = jax.tree.map(lambda x: x[seed], states)
        estimates = k_estimates(algo, state, train_tasks, jax.random.PRNGKey(13))
        k = choose_k(algo, state, train_tasks, jax.random.PRNGKey(13))
        assert k == int(np.argmax(estimates)) and 1 <= k < n  # explores, but not every pull
        # agent(None) reads k from its params: one compilation serves both seeds
        params = {"network": state.params, "k": jnp.int32(k)}
        total = evaluate(algo.agent(), params, BANDIT2, test_tasks, n, jax.random.PRNGKey(12)).sum(1)
        # standard errors of the means are about .1 each over 500 tasks; demand a margin of 1.5
        print(f"seed {seed}: k={k} estimates={np.round(estimates, 2)} total={total.mean():.3f} random={random_total.mean():.3f}")
        assert total.mean() > random_total.mean() + 1.5, (seed, k, total.mean(), random_total.mean())


@pytest.mark.slow
def test_bandit_rule_learns_in_context_on_the_control_bandit():
    """The control bandit (10 arms, arm 0 fixed at 0, the others' means ~ N(0, 1)) pays 0 per pull
    in expectation to any policy that ignores the context; only reading the explore pulls (which
    arm paid well) does better. With the bandit rule the exploit policy gets there: about 0.15 per
    pull after 1000 updates at n = 20 (random context; best arm in it ~1). About 3 minutes."""
    env = metarl.make("fixed-arm-bandit", arms=10, fixed_mean=0.0)
    config = dataclasses.replace(PRESETS["fast-bandit"], total_updates=1000)
    algo = FirstExplore(env, 20, config)

    @jax.jit
    def train(state):
        return jax.lax.scan(lambda s, _: algo.update(s), state, None, length=config.total_updates)

    _, metrics = train(algo.init(jax.random.PRNGKey(0)))
    per_pull = np.asarray(metrics["exploit_return"])
    assert abs(per_pull[:100].mean()) < 0.05  # untrained: random arms, 0 in expectation
    assert per_pull[-100:].mean() > 0.08, per_pull[-100:].mean()


def test_a_schedule_of_the_runs_length_is_set_by_the_run():
    """total_updates=None ("fast" presets): the host loop's `for_run` sets it from --steps, a resumed
    run keeps its saved value, and outside a run it is a clear error, not a silent default."""
    env = metarl.make("fixed-arm-bandit", arms=2)
    algo = FirstExplore(env, 2, PRESETS["fast"])
    assert algo.config.total_updates is None
    with pytest.raises(ConfigError, match="the run's own length"):
        algo.init(jax.random.PRNGKey(0))
    assert algo.for_run(7).config.total_updates == 7
    assert algo.for_run(7, {"total_updates": 3}).config.total_updates == 3  # resuming keeps the schedule
    fixed = FirstExplore(env, 2, dataclasses.replace(PRESETS["fast"], total_updates=5))
    assert fixed.for_run(7) is fixed


def test_always_exploit_trains_on_a_bandit():
    """Always-exploit on one-step episodes (the episode path) trains its exploit head on the explore
    group's pulls: two updates run and change the parameters (it raised KeyError 'exploit' once)."""
    env = metarl.make("fixed-arm-bandit", arms=3, fixed_mean=0.5)
    algo = FirstExplore(env, 3, FirstExploreConfig(hidden=16, heads=2, layers=1, batch_tasks=4, always_exploit=True))
    state = algo.init(jax.random.PRNGKey(0))
    update = jax.jit(algo.update)
    new, metrics = update(update(state)[0])  # the lr warms up from 0 at the first update
    assert np.isfinite(float(metrics["exploit_loss"]))
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), state.params, new.params)
    assert max(jax.tree.leaves(moved)) > 0.0
