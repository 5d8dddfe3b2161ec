"""First-Explore's one-step path (fused explore/exploit network steps), the reference bandit
network's token layout ("pull") and its complementary heads: equivalences and hand-computed values."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metarl
from metarl.algos import make
from metarl.algos.first_explore import PRESETS, FirstExplore, complementary_loss
from metarl.errors import ConfigError
from metarl.nets.transformer import Tokens, forward_heads

ENV = metarl.make("fixed-arm-bandit", arms=4)
N = 5


def _algo(**overrides):
    config = dataclasses.replace(PRESETS["fast-bandit"], total_updates=10, batch_tasks=3, **overrides)
    return FirstExplore(ENV, N, config)


def _big_params(algo, seed=0):
    params = algo.init(jax.random.PRNGKey(seed)).params
    return jax.tree.map(lambda x: x * 3.0, params)  # far from uniform: contexts change the logits


def _assert_trees_close(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), **tol)


@pytest.mark.parametrize("exploit_first", [False, True])
def test_fused_rollout_gives_the_episode_paths_records(exploit_first):
    """fused=True (n + 1 network steps of 2 tokens) against fused=False (3n steps): the same keys,
    so on the bandit (constant first observation) the same actions, rewards, logits and tokens."""
    fused, plain = _algo(), _algo(fused=False)
    assert fused.one_step_path and not plain.one_step_path
    params = _big_params(fused)
    task = ENV.sample_task(jax.random.PRNGKey(1))
    args = (params, task, jax.random.PRNGKey(2), jnp.float32(1.0), exploit_first)
    a = fused.rollout_task(*args, epsilon=0.05)
    b = plain.rollout_task(*args, epsilon=0.05)
    _assert_trees_close(a, b, atol=1e-5)
    assert len(set(np.asarray(a["explore"]["action"]).ravel().tolist())) > 1  # not vacuous


def test_fused_loss_and_gradients_equal_the_episode_paths():
    fused, plain = _algo(), _algo(fused=False)
    params = _big_params(fused)
    task = ENV.sample_task(jax.random.PRNGKey(1))
    records = jax.jit(jax.vmap(lambda k: fused.rollout_task(params, task, k, jnp.float32(1.0), epsilon=0.05)))(jax.random.split(jax.random.PRNGKey(3), 3))
    (loss_a, stats_a), grads_a = jax.jit(jax.value_and_grad(fused._loss, has_aux=True))(params, records)
    (loss_b, stats_b), grads_b = jax.jit(jax.value_and_grad(plain._loss, has_aux=True))(params, records)
    assert float(loss_a) > 0
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
    _assert_trees_close(stats_a, stats_b, rtol=1e-5, atol=1e-6)
    _assert_trees_close(grads_a, grads_b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("layout", ["episode", "pull"])
def test_one_step_rollout_logits_are_the_training_logits(layout):
    """The rollout's cached network steps and the training forward compute the same function:
    with temperature 1 and epsilon 0 the recorded sampling logits are the training logits."""
    algo = _algo(layout=layout, complementary_heads=layout == "pull")
    params = _big_params(algo)
    records = algo.rollout_task(params, ENV.sample_task(jax.random.PRNGKey(1)), jax.random.PRNGKey(2), jnp.float32(1.0))
    logits = algo._one_step_logits(params, records)
    for g in ("explore", "exploit"):
        np.testing.assert_allclose(logits[g][g], records[g]["sample_logits"], atol=2e-5)
    ctx = np.asarray(logits["exploit"]["exploit"])[:, 0]
    assert np.abs(ctx - ctx[:1]).max() > 1e-2  # the context changes the logits


def test_pull_layout_tokens_are_the_references():
    """One token per pull: the empty token, then (one-hot action, reward) of each explore pull,
    global positions; no observation and no episode term: changing them changes nothing."""
    algo = _algo(layout="pull")
    params = _big_params(algo)
    tokens = Tokens(
        obs=jnp.zeros((3, 1)), action=jnp.array([-1, 2, 0]), reward=jnp.array([0.0, 0.7, 0.5]),
        position=jnp.arange(3), episode=jnp.zeros((3,), jnp.int32),
    )
    mask = jnp.tril(jnp.ones((3, 3), bool))
    out = forward_heads(algo.network, params, tokens, mask)
    other = forward_heads(algo.network, params, tokens.replace(obs=jnp.ones((3, 1)) * 5, episode=jnp.array([3, 1, 2])), mask)
    _assert_trees_close(out, other, atol=1e-6)
    assert set(params["params"]) >= {"embed_reward", "embed_action", "embed_position"} and "embed_obs" not in params["params"]
    # flax's default Dense init (lecun normal): the reward kernel (fan-in 1) has std about 1, not 0.02
    assert np.std(np.asarray(params["params"]["embed_reward"]["kernel"])) / 3.0 > 0.5


def test_pull_layout_agent_matches_the_training_forward():
    """The test-time agent (explore k pulls, then exploit with the k-pull context) gives the
    training forward's logits on the same pulls."""
    n, k = 5, 2
    algo = FirstExplore(ENV, n, dataclasses.replace(PRESETS["reference-bandit"], hidden=16, heads=2, layers=2))
    params = _big_params(algo)
    agent = algo.agent(k)
    trial = metarl.Trial(ENV, n)
    timestep, state = trial.reset(jax.random.PRNGKey(3), ENV.sample_task(jax.random.PRNGKey(4)))
    carry = agent.init(jax.random.PRNGKey(0))
    logits, actions, rewards = [], [], []
    for t in range(n):
        lg, carry = agent.policy_logits({"network": params, "k": jnp.int32(k)}, carry, timestep)
        action = jax.random.categorical(jax.random.PRNGKey(10 + t), lg)
        timestep, state, reward, _ = trial.step(jax.random.PRNGKey(20 + t), state, action)
        logits.append(lg), actions.append(int(action)), rewards.append(float(reward))
    tokens = Tokens(
        obs=jnp.zeros((k + 1, 1)), action=jnp.array([-1] + actions[:k]), reward=jnp.array([0.0] + rewards[:k]),
        position=jnp.arange(k + 1), episode=jnp.zeros((k + 1,), jnp.int32),
    )
    heads = forward_heads(algo.network, params, tokens, jnp.tril(jnp.ones((k + 1, k + 1), bool)))
    expected = [heads["explore"][t] for t in range(k)] + [heads["exploit"][k]] * (n - k)
    np.testing.assert_allclose(np.stack(logits), np.stack(expected), atol=2e-5)


def test_complementary_loss_by_hand():
    """Weights 1, 0, 1 over three one-step episodes, actions 0, 1, 1, two actions; sampling logits
    log(.5), log(.5) (uniform). Policy head logits [0, 0] everywhere, complementary head [1, 0]:
    CE(policy) = ln 2 on episodes 0 and 2; CE(complement, action 1) = ln(1 + e) on episode 1.
    Policy part (ln 2 + ln 2) / 3; complementary part ln(1 + e) / 3."""
    w = jnp.array([1.0, 0.0, 1.0])
    rec = {
        "sample_logits": jnp.log(jnp.full((3, 1, 2), 0.5)),
        "action": jnp.array([[0], [1], [1]]),
        "acted": jnp.ones((3, 1), bool),
    }

    def episode_ce(logits, rec):
        ce = optax.softmax_cross_entropy_with_integer_labels(rec["sample_logits"] + logits, rec["action"])
        return jnp.sum(ce * rec["acted"], axis=-1)

    policy = jnp.zeros((3, 1, 2))
    complement = jnp.broadcast_to(jnp.array([1.0, 0.0]), (3, 1, 2))
    loss, extra = complementary_loss(episode_ce, policy, complement, rec, w)
    np.testing.assert_allclose(loss, 2 * np.log(2) / 3, rtol=1e-6)
    np.testing.assert_allclose(extra, np.log(1 + np.e) / 3, rtol=1e-6)
    loss, extra = complementary_loss(episode_ce, policy, None, rec, w)  # without the heads: nothing more
    np.testing.assert_allclose(loss, 2 * np.log(2) / 3, rtol=1e-6)
    assert float(extra) == 0.0


def test_complementary_heads_train_on_every_sample():
    """With the heads, every acted sample has a gradient: the loss grows by the complementary
    part, whose gradient reaches the complementary heads and the trunk."""
    algo = _algo(complementary_heads=True)
    params = _big_params(algo)
    assert {"nonexplore_policy", "nonexploit_policy"} <= set(params["params"])
    records = jax.jit(jax.vmap(lambda k: algo.rollout_task(params, ENV.sample_task(k), k, jnp.float32(1.0), epsilon=0.05)))(jax.random.split(jax.random.PRNGKey(3), 3))
    (loss, stats), grads = jax.jit(jax.value_and_grad(algo._loss, has_aux=True))(params, records)
    np.testing.assert_allclose(loss, stats["explore_loss"] + stats["exploit_loss"] + stats["complementary_loss"], rtol=1e-5)
    assert float(stats["complementary_loss"]) > 0
    assert float(jnp.abs(grads["params"]["nonexploit_policy"]["kernel"]).max()) > 0


def test_reference_bandit_preset_and_bad_combinations():
    c = PRESETS["reference-bandit"]
    assert (c.layout, c.complementary_heads, c.best, c.weighted, c.rollout_epsilon, c.refresh_every) == ("pull", True, "explore", False, 0.05, 1)
    assert (c.hidden, c.heads, c.layers, c.batch_tasks) == (128, 4, 3, 128)
    with pytest.raises(ConfigError):
        make("first-explore", ENV, 4, complementary_heads=True, weighted=True)
    with pytest.raises(ConfigError):
        make("first-explore", ENV, 4, layout="tokens")
    with pytest.raises(ConfigError):
        make("first-explore", metarl.make("tabular-mdp", states=3, actions=2, horizon=3), 4, layout="pull")


@pytest.mark.parametrize("preset", ["fast-bandit", "reference-bandit"])
def test_one_step_path_updates_and_chooses_k(preset):
    algo = FirstExplore(ENV, N, dataclasses.replace(PRESETS[preset], hidden=16, heads=2, layers=1, batch_tasks=4, total_updates=3))
    state = algo.init(jax.random.PRNGKey(0))
    state, metrics = jax.jit(algo.update)(state)
    assert np.isfinite(float(metrics["loss"]))
    k = int(algo.agent_params(state)["k"])
    assert 0 <= k <= N
