"""VariBAD: the Gaussian KL by hand, the ELBO's decoding term by hand on a tiny trial, one tiny
update moves every part, and the policy's gradient does not reach the encoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl
from metarl import algos
from metarl.algos.varibad import VariBADNetwork, gaussian_kl
from metarl.errors import ConfigError
from helpers import changed_leaves

CITY = metarl.make("city")
TINY = dict(trials_per_update=4, minibatches=2, epochs=1, hidden=8, latent_dim=3, decoder_hidden=(8,), policy_hidden=(8,))


def test_gaussian_kl_by_hand():
    # KL(N(1, e^0) || N(0, e^0)) = 0.5 * (0 + 1 + 1 - 1) = 0.5 per dimension
    assert float(gaussian_kl(jnp.ones(2), jnp.zeros(2), jnp.zeros(2), jnp.zeros(2))) == pytest.approx(1.0)
    # KL(N(0, e^-1) || N(0, 1)) = 0.5 * (1 + e^-1 - 1) = 0.5 e^-1
    assert float(gaussian_kl(jnp.zeros(1), -jnp.ones(1), jnp.zeros(1), jnp.zeros(1))) == pytest.approx(0.5 * np.exp(-1.0), rel=1e-6)
    assert float(gaussian_kl(jnp.array([0.3]), jnp.array([0.2]), jnp.array([0.3]), jnp.array([0.2]))) == pytest.approx(0.0, abs=1e-7)


def test_varibad_errors():
    with pytest.raises(ConfigError, match="counted_from_episode"):
        algos.make("varibad", CITY, 1)
    with pytest.raises(ConfigError, match="multiple of minibatches"):
        algos.make("varibad", CITY, 2, trials_per_update=6, minibatches=4)


def test_elbo_decodes_every_transition_from_every_step():
    algo = algos.make("varibad", CITY, 2, **TINY, state_coef=0.0, kl_coef=0.0)
    agent, params = algo.agent(), algo.init(jax.random.PRNGKey(0)).params
    net = agent.network
    T = 3
    obs = jnp.array([[4.0, 4.0, 0.0, 0, 0, 0, 0], [4.0, 5.0, 1.0, 0, 0, 0, 0], [0.0, 1.0, 1.0, 0, 0, 0, 0]])
    batch = {"timestep": metarl.TimeStep(obs=obs, prev_action=jnp.zeros(T, jnp.int32), prev_reward=jnp.zeros(T), done=jnp.zeros(T, bool),
                                         episode_index=jnp.zeros(T, jnp.int32), step_index=jnp.arange(T), first=jnp.arange(T) == 0,
                                         outcome_obs=obs, context=jnp.zeros((T, 0))),
             "action": jnp.array([1, 5, 0]), "reward": jnp.array([-0.1, -0.1, -0.1]), "next_obs": jnp.roll(obs, -1, axis=0)}
    mu = jnp.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    logvar = jnp.full((T, 3), -30.0)  # a point mass: the sample is mu
    valid = jnp.array([True, True, False])  # the last step is padding: neither decoded nor a decoder input
    loss, (reward_loss, _, _) = algo.elbo_loss(params, batch, mu, logvar, valid, jax.random.PRNGKey(1))
    enc = agent.encode(obs)
    act = jax.nn.one_hot(batch["action"], 9)
    want = []
    for i in range(2):
        err = 0.0
        for t in range(2):
            r, _ = net.apply(params, mu[i], enc[t], act[t], method=VariBADNetwork.decode)
            err += (float(r) + 0.1) ** 2
        want.append(err)
    assert float(reward_loss) == pytest.approx(np.mean(want), rel=1e-4)
    assert float(loss) == pytest.approx(float(reward_loss), rel=1e-6)
    # ELBO subsampling: one encoder step's latent decodes the trial (the padding step counts as no term)
    _, (one, _, _) = algo.elbo_loss(params, batch, mu, logvar, valid, jax.random.PRNGKey(1), elbo_steps=1)
    assert any(float(one) == pytest.approx(x, rel=1e-4) for x in want) or float(one) == 0.0


def test_one_update_trains_every_part_and_policy_gradient_stops_at_the_posterior():
    algo = algos.make("varibad", CITY, 2, **TINY)
    state = algo.init(jax.random.PRNGKey(0))
    new, metrics = jax.jit(algo.update)(state)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    moved = changed_leaves(state.params["params"], new.params["params"])
    for part in ("cell", "mu", "logvar", "dec_reward", "dec_state", "pi", "v"):
        assert all(jax.tree.leaves(moved[part])), part
    # the policy's logits and value send no gradient into the encoder (VariBAD trains it by the ELBO alone)
    agent = algo.agent()
    timestep, _ = algo.trial.reset(jax.random.PRNGKey(1))
    grads = jax.grad(lambda p: jnp.sum(agent.step(p, agent.init(None), timestep)[1]) + agent.step(p, agent.init(None), timestep)[2])(new.params)
    for part in ("cell", "mu", "logvar"):
        assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads["params"][part])), part
    assert any(float(jnp.max(jnp.abs(g))) > 0.0 for g in jax.tree.leaves(grads["params"]["pi"]))


def test_policy_and_vae_are_clipped_apart():
    """A huge VAE gradient must not shrink the policy's step (one global clip would): the policy's
    Adam update equals the one it takes with the VAE's gradient zeroed."""
    from metarl.algos.varibad import param_parts

    algo = algos.make("varibad", CITY, 2, **TINY, max_grad_norm=0.5)
    params = algo.init(jax.random.PRNGKey(0)).params
    parts = param_parts(params)
    names = set(params["params"])
    kinds = {n: set(jax.tree.leaves(parts["params"][n])) for n in names}
    assert {n for n, k in kinds.items() if k == {"policy"}} == {"pol_0", "pi", "v"}
    assert all(kinds[n] == {"vae"} for n in names - {"pol_0", "pi", "v"})
    opt = algo.optimizer()
    grads = jax.tree.map(lambda p, part: jnp.full_like(p, 1e4 if part == "vae" else 0.01), params, parts)
    quiet = jax.tree.map(lambda g, part: g if part == "policy" else jnp.zeros_like(g), grads, parts)
    step = jax.jit(lambda g: opt.update(g, opt.init(params), params)[0])
    loud, calm = step(grads), step(quiet)
    for name in ("pol_0", "pi", "v"):
        for a, b in zip(jax.tree.leaves(loud["params"][name]), jax.tree.leaves(calm["params"][name])):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
            assert float(jnp.max(jnp.abs(a))) > 1e-4  # the policy moved (lr 1e-3, Adam's first step ~ lr)
    with pytest.raises(ConfigError, match="vae_lr"):
        algos.make("varibad", CITY, 2, vae_lr=0.0)
