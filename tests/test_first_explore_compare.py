"""The comparison script's affordable-scale settings (no training)."""

import metarl
import metarl.algos.rl2
from benchmarks import first_explore_compare as fec


def test_small_variants_and_paper_rl2_settings():
    assert set(fec.SMALL_VARIANTS) <= set(fec.VARIANTS)
    family, options, n, deceptive = fec.VARIANTS["small-bandit-deceptive"]
    env = metarl.make(family, **options)
    paper, steps = fec.make_algo("rl2-paper", env, n, 1.0, small="small-bandit-deceptive")
    assert (paper.config.core, paper.config.hidden, paper.config.clip_eps, paper.config.gamma) == ("gru", 64, 0.05, 0.95)
    assert steps % paper.steps_per_update == 0 and steps > 0
    ours, _ = fec.make_algo("rl2", env, n, 1.0, small="small-bandit-deceptive")
    assert ours.config == metarl.algos.rl2.PRESETS[fec.SMALL["rl2_preset"]]
    fe, fe_steps = fec.make_algo("first-explore", env, n, 1.0, small="small-bandit-deceptive")
    assert fe.config.total_updates == fec.SMALL["fe_updates"]["small-bandit-deceptive"] and fe.config.hidden == fec.SMALL["fe_config"]["hidden"]
    assert fe_steps == fec.SMALL["fe_updates"]["small-bandit-deceptive"] * fe.steps_per_update
    ae, _ = fec.make_algo("always-exploit", env, n, 1.0, small="small-bandit-deceptive")
    assert ae.config.always_exploit and not fe.config.always_exploit


def test_scale_small_lists(capsys):
    fec.main(["--scale", "small", "--list"])
    out = capsys.readouterr().out
    assert "small-bandit-deceptive" in out and "small-bandit-control" in out
