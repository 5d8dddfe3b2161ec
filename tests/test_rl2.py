"""RL²: recurrent network (resets, step = sequence), configs, seeds vmap, and learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl
from metarl.algos import make
from metarl.algos.rl2 import PRESETS, RL2, RL2Config
from metarl.errors import ConfigError
from metarl.eval.evaluate import evaluate
from metarl.nets import RL2ActorCritic, sequence, step

BANDIT2 = metarl.make("bandit", arms=2)


def _stream(env, episodes, trials, key):
    """A time-major [T, 1] stream of timesteps from a resampling trial: `trials` whole trials."""
    trial = metarl.Trial(env, episodes, resample=True)
    key_reset, key_actions, key_steps = jax.random.split(key, 3)
    timestep, state = trial.reset(key_reset)
    num = trials * trial.num_steps
    actions = jax.random.randint(key_actions, (num,), 0, env.num_actions)

    def body(loop, xs):
        timestep, state = loop
        action, k = xs
        nxt, state, _, _ = trial.step(k, state, action)
        return (nxt, state), timestep

    _, stream = jax.lax.scan(body, (timestep, state), (actions, jax.random.split(key_steps, num)))
    return jax.tree.map(lambda x: x[:, None], stream)


NETS = [
    dict(core="gru", shared=False),
    dict(core="gru", shared=True, layer_norm=False),
    dict(core="lstm", shared=False),
    dict(core="lstm", shared=True, episodes=3),
]


@pytest.mark.parametrize("options", [pytest.param(NETS[0], marks=pytest.mark.slow), NETS[3]], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_memory_resets_only_at_trial_boundaries(options):
    episodes, trials = 3, 3
    stream = _stream(BANDIT2, episodes, trials, jax.random.key(0))
    first = np.asarray(stream.first[:, 0])
    done = np.asarray(stream.done[:, 0])
    np.testing.assert_array_equal(np.flatnonzero(first), [0, 3, 6])  # trial starts
    np.testing.assert_array_equal(done, ~first)  # every one-step bandit episode ends with `done`...
    net = RL2ActorCritic(num_actions=2, hidden=8, **options)
    # ...yet only `first` resets: start from a random (nonzero) memory and compare each trial with
    # the same trial run alone from zero memory.
    carry0 = jax.tree.map(lambda x: jax.random.normal(jax.random.key(2), x.shape), net.initial_carry((1,)))
    params = net.init(jax.random.key(1), carry0, stream)
    _, logits, values = sequence(net, params, carry0, stream)
    for start in (0, 3, 6):
        part = jax.tree.map(lambda x: x[start : start + episodes], stream)
        _, logits_alone, values_alone = sequence(net, params, net.initial_carry((1,)), part)
        np.testing.assert_allclose(logits[start : start + episodes], logits_alone, atol=1e-6)
        np.testing.assert_allclose(values[start : start + episodes], values_alone, atol=1e-6)
    # Forcing a reset at an episode end (not a trial start) changes the outputs: done is not a reset.
    forced = stream.replace(first=stream.first.at[4].set(True))
    _, logits_forced, _ = sequence(net, params, carry0, forced)
    assert np.abs(np.asarray(logits_forced[4] - logits[4])).max() > 1e-6


@pytest.mark.parametrize("options", NETS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_step_and_sequence_agree(options):
    stream = _stream(BANDIT2, 4, 2, jax.random.key(3))
    net = RL2ActorCritic(num_actions=2, hidden=16, **options)
    carry0 = net.initial_carry((1,))
    params = net.init(jax.random.key(4), carry0, stream)
    carry_seq, logits_seq, values_seq = sequence(net, params, carry0, stream)

    def body(carry, timestep):
        carry, logits, value = step(net, params, carry, timestep)
        return carry, (logits, value)

    carry_step, (logits_step, values_step) = jax.lax.scan(body, carry0, stream)
    np.testing.assert_allclose(logits_step, logits_seq, atol=1e-6)
    np.testing.assert_allclose(values_step, values_seq, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), carry_step, carry_seq)


@pytest.mark.parametrize("layer_norm", [pytest.param(True, marks=pytest.mark.slow), False])
def test_gru_hand_written_backward_matches_autodiff(layer_norm):
    from metarl.nets.recurrent import _gru_forward, gru_recurrence

    T, N, B, H = 5, 2, 3, 4
    k = jax.random.split(jax.random.key(0), 6)
    w_h = 0.5 * jax.random.normal(k[0], (N, H, 3 * H))
    scale = 1 + 0.1 * jax.random.normal(k[1], (N, 1, 3, H))
    bias = 0.1 * jax.random.normal(k[2], (N, 1, 3, H))
    xp = jax.random.normal(k[3], (T, N, B, 3, H))
    h0 = jax.random.normal(k[4], (N, B, H))
    reset = jnp.zeros((T, B), bool).at[2, 1].set(True)
    weights = jax.random.normal(k[5], (T, N, B, H))

    def loss(fn):
        def f(*args):
            h_last, hs = fn(layer_norm, *args, reset)
            return jnp.sum(hs * weights) + jnp.sum(h_last) ** 2
        return f

    autodiff = lambda *a: _gru_forward(*a)[0]  # noqa: E731
    args = (w_h, scale, bias, xp, h0)
    ours = jax.grad(loss(gru_recurrence), argnums=(0, 1, 2, 3, 4))(*args)
    ref = jax.grad(loss(autodiff), argnums=(0, 1, 2, 3, 4))(*args)
    for name, a, b in zip(("w_h", "scale", "bias", "xp", "h0"), ours, ref):
        if layer_norm or name not in ("scale", "bias"):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize(
    "field, value",
    [("core", "rnn"), ("hidden", 0), ("gamma", 1.5), ("gae_lambda", -0.1), ("lr", 0.0), ("epochs", 0),
     ("clip_eps", 0.0), ("minibatch_trials", 0), ("trials_per_update", 0), ("shared", "yes"), ("ent_coef", float("nan")),
     ("devices", 0), ("lr_decay_updates", -1)],
)
def test_bad_config_raises(field, value):
    with pytest.raises(ConfigError, match=field):
        RL2Config(**{field: value})


def test_bad_options_raise():
    with pytest.raises(ConfigError, match="no option 'hiden'"):
        make("rl2", BANDIT2, 10, hiden=8)
    with pytest.raises(ConfigError, match="multiple of the number of minibatches"):
        make("rl2", BANDIT2, 10, trials_per_update=10, minibatches=3)


def test_data_parallel_config_errors():
    with pytest.raises(ConfigError, match="split evenly over devices=2"):
        make("rl2", BANDIT2, 10, trials_per_update=10, minibatches=2, devices=2)
    if len(jax.devices()) < 2:  # the usual test process: one CPU device
        algo = make("rl2", BANDIT2, 10, trials_per_update=8, minibatches=2, devices=2)
        with pytest.raises(ConfigError, match=r"metarl.use_host_devices\(2\)"):
            algo.update(algo.init(jax.random.key(0)))


_DATA_PARALLEL_CHECK = """
import metarl
metarl.use_host_devices(2)  # before the first JAX computation
import jax, numpy as np
from metarl.algos import make
assert len(jax.devices()) == 2, jax.devices()
small = dict(hidden=8, trials_per_update=8, minibatches=2, epochs=2, lr=3e-3, normalize_advantages=True)
one, two = (make("rl2", metarl.make("bandit", arms=3), 4, devices=d, **small) for d in (1, 2))
close = lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
keys = jax.random.split(jax.random.key(1), 2)  # two seeds, vmapped
jax.tree.map(close, jax.jit(jax.vmap(one.update))(jax.vmap(one.init)(keys)), jax.jit(jax.vmap(two.update))(jax.vmap(two.init)(keys)))
print("ok")
"""


@pytest.mark.slow  # 40 s: two host devices in a subprocess (python -m pytest -m slow)
def test_data_parallel_matches_one_device():
    """devices=2 (two host CPU devices, metarl.use_host_devices(2): needs its own process) computes the
    same update (rollout, standardised advantages, gradients, metrics) as one device."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-c", _DATA_PARALLEL_CHECK], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_reference_sizes():
    # 240,000 steps per update and minibatches of 60 trials, whatever the trial length.
    bandit5 = metarl.make("bandit", arms=5)
    for episodes, trials, minibatches in [(10, 24_000, 400), (100, 2_400, 40), (500, 480, 8)]:
        algo = RL2(bandit5, episodes, PRESETS["reference"])
        assert (algo.trials_per_update, algo.num_minibatches, algo.minibatch_size) == (trials, minibatches, 60)
        assert algo.steps_per_update == 240_000
    mdp = RL2(metarl.make("tabular-mdp"), 10)
    assert (mdp.trials_per_update, mdp.num_minibatches) == (2_400, 40)
    c = PRESETS["reference"]
    assert (c.core, c.hidden, c.layer_norm, c.shared) == ("gru", 256, True, False)
    assert (c.clip_eps, c.ent_coef, c.gamma, c.gae_lambda, c.epochs, c.lr, c.weight_decay, c.adam_eps) == (
        0.1, 0.01, 0.99, 0.3, 8, 2e-4, 0.01, 1e-5)
    assert not c.normalize_advantages


EPISODES = 10
#: Small enough to compile and train in seconds; shared (one compiled `update`) by the tests below.
SMALL = dict(hidden=32, trials_per_update=256, minibatches=2, epochs=4, lr=3e-3, gae_lambda=0.9, normalize_advantages=True)


@pytest.fixture(scope="module")
def small():
    algo = make("rl2", BANDIT2, EPISODES, **SMALL)
    return algo, jax.jit(algo.update)


@pytest.mark.slow  # 30-45 s; the vmapped update is exercised by every multi-seed run test
def test_vmap_over_seeds_matches_separate_runs(small):
    algo, update = small
    keys = jax.random.split(jax.random.key(5), 2)
    separate = [update(algo.init(k)) for k in keys]
    ts, metrics = jax.jit(jax.vmap(algo.update))(jax.vmap(algo.init)(keys))
    for i in range(2):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-5), ts, separate[i][0])
        for name, value in separate[i][1].items():
            np.testing.assert_allclose(metrics[name][i], value, rtol=1e-4, atol=1e-5)
    # The two seeds really differ, and metrics are float32 scalars per seed.
    w_h = ts.params["params"]["core"]["w_h"]
    assert not np.allclose(w_h[0], w_h[1])
    assert set(metrics) >= {"trial_return", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "grad_norm"}
    assert all(v.dtype == jnp.float32 and v.shape == (2,) for v in metrics.values())
    # train_state is arrays only (checkpointable): no typed PRNG keys, no Python objects.
    assert all(isinstance(x, jax.Array) and not jnp.issubdtype(x.dtype, jax.dtypes.prng_key) for x in jax.tree.leaves(ts))
    # NaN parameters show in the metrics (the host loop stops on them).
    bad = separate[0][0]
    bad = bad.replace(params=jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), bad.params))
    _, metrics = update(bad)
    assert np.isnan(metrics["policy_loss"]) and np.isnan(metrics["grad_norm"])


def test_learns_two_armed_bandit(small):
    """A tiny RL² agent beats random on 2-armed bandits (n=10). The random agent's expected total
    return on the same tasks is n * mean arm mean (about 5.0); the RL² agent's score has a standard
    error of about 0.1 over 500 tasks; the margin asked is 0.5."""
    algo, update = small
    ts = algo.init(jax.random.key(0))
    returns = []
    for _ in range(25):
        ts, metrics = update(ts)
        returns.append(float(metrics["trial_return"]))
    assert np.isfinite(returns).all()
    tasks = BANDIT2.sample_tasks(jax.random.key(123), 500)
    learned = evaluate(algo.agent(), algo.agent_params(ts), BANDIT2, tasks, EPISODES, jax.random.key(7)).sum(1)
    random = EPISODES * float(jnp.mean(tasks.means))
    assert abs(random - 5.0) < 0.2
    assert learned.mean() > random + 0.5, (learned.mean(), random)
    assert np.mean(returns[-5:]) > np.mean(returns[:5]) + 0.3  # the rollouts' returns went up too


@pytest.mark.parametrize("layer_norm", [pytest.param(True, marks=pytest.mark.slow), False])
def test_gru_layer_backward_matches_autodiff(layer_norm):
    """The fused GRU layer (input projection inside the scan, gradients accumulated in the
    backward carry) against autodiff of its own forward and against the unfused recurrence."""
    from metarl.nets.recurrent import _gru_layer_forward, gru_layer, gru_recurrence

    T, N, B, H, F = 6, 2, 3, 4, 5
    k = jax.random.split(jax.random.key(1), 10)
    w_x = 0.5 * jax.random.normal(k[0], (N, F, 3 * H))
    x_scale = 1 + 0.1 * jax.random.normal(k[1], (N, 1, 3, H))
    x_bias = 0.1 * jax.random.normal(k[2], (N, 1, 3, H))
    w_h = 0.5 * jax.random.normal(k[3], (N, H, 3 * H))
    h_scale = 1 + 0.1 * jax.random.normal(k[4], (N, 1, 3, H))
    h_bias = 0.1 * jax.random.normal(k[5], (N, 1, 3, H))
    x = jax.random.normal(k[6], (T, B, F))
    h0 = jax.random.normal(k[7], (N, B, H))
    reset = jnp.zeros((T, B), bool).at[2, 1].set(True).at[0, 2].set(True)
    weights = jax.random.normal(k[8], (T, N, B, H))
    params = (w_x, x_scale, x_bias, w_h, h_scale, h_bias)

    def loss(fn):
        def f(*args):
            h_last, hs = fn(*args, x, h0, reset)
            return jnp.sum(hs * weights) + jnp.sum(h_last) ** 2
        return f

    for unroll in (1, 2):
        ours_fn = lambda *a: gru_layer(layer_norm, unroll, *a)  # noqa: E731
        auto_fn = lambda *a: _gru_layer_forward(layer_norm, unroll, *a)[0]  # noqa: E731
        np.testing.assert_allclose(loss(ours_fn)(*params), loss(auto_fn)(*params), rtol=1e-6)
        ours = jax.jit(jax.grad(loss(ours_fn), argnums=tuple(range(6))))(*params)
        ref = jax.grad(loss(auto_fn), argnums=tuple(range(6)))(*params)
        for name, a, b in zip(("w_x", "x_scale", "x_bias", "w_h", "h_scale", "h_bias"), ours, ref):
            if layer_norm or name not in ("x_scale", "h_scale", "h_bias"):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"{name} unroll={unroll}")

    if layer_norm:  # same outputs as the unfused path (input projection outside the scan)
        xr = jnp.einsum("tbf,nfg->tnbg", x, w_x).reshape(T, N, B, 3, H)
        mean = xr.mean(-1, keepdims=True)
        xp = (xr - mean) * jax.lax.rsqrt(jnp.square(xr - mean).mean(-1, keepdims=True) + 1e-5) * x_scale + x_bias
        np.testing.assert_allclose(gru_layer(True, 1, *params, x, h0, reset)[1],
                                   gru_recurrence(True, w_h, h_scale, h_bias, xp, h0, reset)[1], rtol=1e-5, atol=1e-6)


def test_derived_trials_round_to_whole_minibatches():
    room = metarl.make("dark-treasure-room")  # trials of 10 x 9 = 90 steps
    # 12,000 steps would be 133 trials, not a whole number of 20-trial minibatches: 140 = 7 x 20
    algo = make("rl2", room, 10, steps_per_update=12_000, minibatch_trials=20)
    assert (algo.trials_per_update, algo.num_minibatches, algo.steps_per_update) == (140, 7, 12_600)
    # a whole number of minibatches is kept as it is (one minibatch of 120 trials)
    assert make("rl2", BANDIT2, 100, steps_per_update=12_000, minibatch_trials=100).trials_per_update == 120


def test_lr_decays_linearly_to_zero_over_lr_decay_updates():
    """With lr_decay_updates = 2, 2 epochs and 3 minibatches, the step size falls linearly over the
    2 x 2 x 3 = 12 optimiser steps and is 0 from then on (Adam's first step has |update| = lr)."""
    algo = make("rl2", BANDIT2, 10, lr=0.1, lr_decay_updates=2, epochs=2, trials_per_update=6, minibatch_trials=2,
                weight_decay=0.0)
    assert algo.num_minibatches == 3
    opt = algo.optimizer()
    params = {"w": jnp.zeros(()), "b": jnp.zeros(())}
    grads = {"w": jnp.ones(()), "b": jnp.ones(())}
    state = opt.init(params)
    sizes = []
    for _ in range(14):
        updates, state = opt.update(grads, state, params)
        sizes.append(float(abs(updates["b"])))
    np.testing.assert_allclose(sizes[0], 0.1, rtol=1e-4)
    np.testing.assert_allclose(sizes[6], 0.1 * (1 - 6 / 12), rtol=1e-3)
    assert sizes[12] == sizes[13] == 0.0
    # the default keeps a constant rate
    const = make("rl2", BANDIT2, 10, lr=0.1, weight_decay=0.0).optimizer()
    state = const.init(params)
    for _ in range(3):
        updates, state = const.update(grads, state, params)
    np.testing.assert_allclose(float(abs(updates["b"])), 0.1, rtol=1e-4)
