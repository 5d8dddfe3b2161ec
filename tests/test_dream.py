"""DREAM: the information-gain reward by hand, the agent never reads the task id, clear errors, and
one tiny update moves every part (the id table, the decoder, both policies)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl
from metarl import algos
from metarl.algos.dream import information_gain
from metarl.errors import ConfigError

CITY = metarl.make("city")
TINY = dict(trials_per_update=4, minibatches=2, epochs=1, embed_dim=4, explorer_hidden=8, decoder_hidden=8, exploit_hidden=(8,), explore_epsilon_steps=0)


def test_information_gain_by_hand():
    f = jnp.array([1.0, 0.0])
    # the decoder's embedding before each step's transition: (0,0) -> (0.5,0) -> (1,0) -> (1,0)
    g = jnp.array([[0.0, 0.0], [0.5, 0.0], [1.0, 0.0], [1.0, 0.0]])
    # d = 1, 0.25, 0, 0: step 0 gains 0.75, step 1 0.25, steps 2 and 3 nothing; less 0.1 each
    np.testing.assert_allclose(information_gain(g, f, 0.1), [0.65, 0.15, -0.1, -0.1], atol=1e-6)


def test_dream_errors():
    with pytest.raises(ConfigError, match="two-phase"):
        algos.make("dream", metarl.make("bandit"), 2)
    with pytest.raises(ConfigError, match="episodes >= 2"):
        algos.make("dream", CITY, 1)
    with pytest.raises(ConfigError, match="multiple of minibatches"):
        algos.make("dream", CITY, 2, trials_per_update=6, minibatches=4)


def test_one_update_trains_every_part_and_the_agent_never_reads_the_task_id():
    algo = algos.make("dream", CITY, 2, **TINY)
    state = algo.init(jax.random.PRNGKey(0))
    new, metrics = jax.jit(algo.update)(state)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.params["params"], new.params["params"])
    for part in ("f", "explorer_cell", "explorer_pi", "decoder_cell", "decoder_out", "exploit_pi"):
        assert all(jax.tree.leaves(moved[part])), part
    # at test time z is decoded from the exploration episode: scrambling the id table changes nothing
    params = new.params
    scrambled = jax.tree.map(lambda x: x, params)
    table = params["params"]["f"]["embedding"]
    scrambled["params"]["f"]["embedding"] = jax.random.normal(jax.random.PRNGKey(5), table.shape) * 10
    tasks = CITY.tasks(np.arange(24))
    returns = algo.evaluate(new, jax.random.PRNGKey(1), tasks=tasks)
    again = algo.evaluate(new.replace(params=scrambled), jax.random.PRNGKey(1), tasks=tasks)
    assert returns.shape == (24, 2)
    np.testing.assert_array_equal(returns, again)
