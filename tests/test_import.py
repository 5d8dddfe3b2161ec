"""IMPORT: clear errors, one tiny update moves every part, the informed head reads f(id), and the
agent never reads the task id at test time."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl
from metarl import algos
from metarl.algos.import_rl import ImportNetwork
from metarl.errors import ConfigError
from helpers import changed_leaves

CITY = metarl.make("city")
TINY = dict(trials_per_update=4, minibatches=2, epochs=1, hidden=8, embed_dim=4, head_hidden=(8,))


def test_import_errors():
    with pytest.raises(ConfigError, match="ids"):
        algos.make("import", metarl.make("bandit"), 2)
    with pytest.raises(ConfigError, match="counted_from_episode"):
        algos.make("import", CITY, 1)
    with pytest.raises(ConfigError, match="multiple of minibatches"):
        algos.make("import", CITY, 2, trials_per_update=6, minibatches=4)


def test_informed_head_reads_the_id_embedding_and_the_recurrent_one_otherwise():
    algo = algos.make("import", CITY, 2, **TINY)
    agent, params = algo.agent(), algo.init(jax.random.PRNGKey(0)).params
    timestep, _ = algo.trial.reset(jax.random.PRNGKey(1))
    net = agent.network
    f = net.apply(params, jnp.int32(3), method=ImportNetwork.id_embedding)
    obs, x = agent.inputs(timestep)
    _, e = net.apply(params, jnp.zeros(8), x, method=ImportNetwork.recur)
    for use_id, z in ((True, f), (False, e)):
        carry = {**agent.init(None), "z_id": f, "use_id": jnp.bool_(use_id)}
        _, logits, value, e_step = agent.step(params, carry, timestep)
        want_logits, want_value = net.apply(params, obs, z, method=ImportNetwork.head)
        np.testing.assert_allclose(logits, want_logits, rtol=1e-6)
        np.testing.assert_allclose(value, want_value, rtol=1e-6)
        np.testing.assert_allclose(e_step, e, rtol=1e-6)


def test_one_update_trains_every_part_and_the_agent_never_reads_the_task_id():
    algo = algos.make("import", CITY, 2, **TINY)
    state = algo.init(jax.random.PRNGKey(0))
    new, metrics = jax.jit(algo.update)(state)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert float(metrics["embedding_distance"]) > 0
    moved = changed_leaves(state.params["params"], new.params["params"])
    for part in ("f", "cell", "e", "pi", "v"):
        assert all(jax.tree.leaves(moved[part])), part
    scrambled = jax.tree.map(lambda x: x, new.params)
    table = new.params["params"]["f"]["embedding"]
    scrambled["params"]["f"]["embedding"] = jax.random.normal(jax.random.PRNGKey(5), table.shape) * 10
    tasks = CITY.tasks(np.arange(24))
    returns = algo.evaluate(new, jax.random.PRNGKey(1), tasks=tasks)
    np.testing.assert_array_equal(returns, algo.evaluate(new.replace(params=scrambled), jax.random.PRNGKey(1), tasks=tasks))
