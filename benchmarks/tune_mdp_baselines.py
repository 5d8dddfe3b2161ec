"""Tune the tabular-MDP baselines' hyperparameters per setting, as Duan et al. (2016) did (the
evaluation beside the reference table is benchmarks/rl2_baselines.py).

1. Grid search. For each hyperparameter value, one 100-episode trial per tuning task; tuning task i
   is `sample_task(PRNGKey(1000 + i))`, disjoint from evaluation (seed 0). None of these agents
   reads the trial length n, so the first n episodes of a 100-episode trial are an n-episode trial:
   one run scores every setting n in {10, 25, 50, 75, 100} (common random numbers across values).
   The chosen value per n maximises the mean total reward over the first n episodes.

    python -m benchmarks.tune_mdp_baselines [--tune-tasks 500]

Writes benchmarks/results/tune_mdp.{json,md}."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import numpy as np

from benchmarks import common



from metarl.baselines import make
from metarl.baselines.mdp import TUNED_MDP
from metarl.envs.registry import make as make_env
from metarl.eval.evaluate import evaluate

SETTINGS = (10, 25, 50, 75, 100)
TUNE_SEED_BASE = 1000
EVAL_SEED = 0
#: baseline -> list of hyperparameter dicts searched
GRIDS = {
    "eps-greedy": [{"eps": e} for e in (0.0, 0.02, 0.05, 0.1, 0.2)],
    # reward_prior_mean: None = the true prior N(1, 1); 0 = TabulaRL's default prior, which the
    # reference's PSRL/OPSRL most likely used (see EXPLANATIONS)
    "psrl": [{"reward_prior_mean": m} for m in (None, 0.0)],
    "opsrl": [{"samples": k, "reward_prior_mean": m} for m in (None, 0.0) for k in (1, 3, 10)],
    "ucrl2": [{"delta": d, "scaling": c} for d in (0.01, 0.05, 0.2) for c in (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)],
    "beb": [{"beta": b} for b in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)],
}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

#: why a cell misses the 2% target (filled from the measured numbers; see the Markdown)
EXPLANATIONS = {
    "UCRL2": (
        "Not resolved. Our UCRL2 is Jaksch et al.'s (2010) optimistic extended value iteration with their L1 "
        "transition radius and reward radius (times the noise std), both multiplied by a tuned `scaling`. Over "
        "the grid (delta x scaling, tune_mdp.md) its best is 2-3% below the reference at n = 25-100 and the "
        "curve in `scaling` is not even monotone (0.05 and 0.2-0.5 good, 0.1 worse), which suggests the "
        "reference's variant (TabulaRL's UCRL2, with its own radii and an episodic rather than doubling-epoch "
        "schedule) differs from ours in a way a single scaling constant cannot absorb. Matching that variant "
        "is left open."
    ),
    "Greedy": (
        "Ours is above the reference at every n. Our `greedy` plans on the posterior-mean MDP under the "
        "true prior (mu ~ N(1, 1), Dirichlet(1)), i.e. the Bayes-greedy agent the brief specifies: an "
        "unvisited (s, a) keeps the prior mean 1, so the agent keeps trying actions until it finds "
        "better-than-average ones, which is already decent exploration. The reference's greedy "
        "(TabulaRL's `EpsilonGreedy` with epsilon 0, used by RL²) uses an almost flat prior "
        "(alpha0 = tau0 = 1e-4): the maximum-likelihood MDP, where one lucky draw locks the policy in. "
        "'Better than the reference' meets the target's letter; the definitions differ."
    ),
    "eps-Greedy": "As for Greedy: ours is eps-greedy around the Bayes-greedy (posterior-mean) plan, not the MLE plan.",
    "PSRL": (
        "Same algorithm, different prior. Our PSRL samples from the true prior's posterior. RL²'s numbers come "
        "from TabulaRL's PSRL, whose default reward prior is N(0, 1) (mu0 = 0, tau0 = 1), a pessimistic prior "
        "for this family (true mean 1): untried actions look worse than tried ones, so it explores less, "
        "which pays off for small n and costs little later. It also counts a transition only if the "
        "episode continues (pContinue), so the last step of each episode never updates P."
    ),
}


def tuning_tasks(env, num):
    return common.tuning_tasks(env, num, TUNE_SEED_BASE)


def prefix_totals(returns):
    """returns [tasks, 100] -> {n: mean total over the first n episodes}"""
    cum = np.cumsum(returns, axis=1)
    return {n: float(cum[:, n - 1].mean()) for n in SETTINGS}


def tune(env, num_tasks, log):
    tasks = tuning_tasks(env, num_tasks)
    key = jax.random.PRNGKey(TUNE_SEED_BASE - 1)
    out = {}
    for name, grid in GRIDS.items():
        rows = []
        for hp in grid:
            t0 = time.time()
            returns = evaluate(make(name, env, max(SETTINGS), **hp), None, env, tasks, max(SETTINGS), key)
            means = prefix_totals(returns)
            sems = {n: float(np.cumsum(returns, 1)[:, n - 1].std() / np.sqrt(num_tasks)) for n in SETTINGS}
            rows.append({"hparams": hp, "mean": means, "sem": sems, "seconds": time.time() - t0})
            log(f"tune {name} {hp}: " + ", ".join(f"n={n}: {means[n]:.1f}" for n in SETTINGS))
        chosen = {n: max(rows, key=lambda r: r["mean"][n])["hparams"] for n in SETTINGS}
        out[name] = {"grid": rows, "chosen": {str(n): chosen[n] for n in SETTINGS}}
    return out


def markdown(result):
    lines = ["# Tabular-MDP baselines: tuning and RL² table", ""]
    lines += [f"Command: `{result['command']}`  ", f"Wall time: {result.get('tune_wall_seconds') or 0:.0f} s on {result['machine']}  ",
              f"Tuning tasks: {result['tune_tasks']} (task i = sample_task(PRNGKey({TUNE_SEED_BASE} + i)), evaluation key "
              f"PRNGKey({TUNE_SEED_BASE - 1})); the evaluation (benchmarks/rl2_baselines.py) uses other tasks, seed {EVAL_SEED}.", ""]
    lines += ["Environment: tabular-mdp, S=10, A=5, H=10, mu ~ N(1, 1), reward noise N(0, 1), P ~ Dirichlet(1).", ""]
    if result.get("tuning"):
        lines += ["## Grid search (mean total reward over the first n episodes of 100-episode trials on the tuning tasks)", "",
                  "One 100-episode trial per tuning task and value: none of these agents reads n, so its first n episodes "
                  "are an n-episode trial (common random numbers across grid values). Standard errors are per value; "
                  "differences between values are far more precise than that (same tasks, same keys).", ""]
        for name, block in result["tuning"].items():
            lines += [f"### {name}", "", "| hyperparameters | " + " | ".join(f"n={n}" for n in SETTINGS) + " |",
                      "|---|" + "---|" * len(SETTINGS)]
            for row in block["grid"]:
                cells = []
                for n in SETTINGS:
                    mark = " **(chosen)**" if block["chosen"][str(n)] == row["hparams"] else ""
                    cells.append(f"{row['mean'][n]:.1f} ± {row['sem'][n]:.1f}{mark}")
                lines.append(f"| {json.dumps(row['hparams'])} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += ["Chosen values (recorded in `TUNED_MDP`, metarl/baselines/mdp.py; settings in between take the nearest n):", ""]
        for name, block in result["tuning"].items():
            lines.append(f"- {name}: " + "; ".join(f"n={n}: {json.dumps(block['chosen'][str(n)])}" for n in SETTINGS))
        lines.append("")
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune-tasks", type=int, default=500)
    args = parser.parse_args(argv)
    os.makedirs(RESULTS, exist_ok=True)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    start = time.time()
    env = make_env("tabular-mdp")
    result = {
        "command": "python -m benchmarks.tune_mdp_baselines " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, jax {jax.__version__} {jax.default_backend()}",
        "tune_tasks": args.tune_tasks,
        "tune_seeds": f"PRNGKey({TUNE_SEED_BASE} + i), i < {args.tune_tasks}", "eval_seed": EVAL_SEED,
        "grids": GRIDS, "explanations": EXPLANATIONS, "notes": [],
    }
    t0 = time.time()
    result["tuning"] = tune(env, args.tune_tasks, log)
    result["tune_wall_seconds"] = time.time() - t0
    if result["tuning"]:
        for name, block in result["tuning"].items():
            for n in SETTINGS:
                recorded = TUNED_MDP[n].get(name)
                if recorded != block["chosen"][str(n)]:
                    result["notes"].append(f"TUNED_MDP[{n}][{name!r}] = {recorded} differs from the search's choice "
                                           f"{block['chosen'][str(n)]}: update metarl/baselines/mdp.py and rerun the evaluation.")
    result["wall_seconds"] = time.time() - start
    common.write_results("tune_mdp", result, markdown(result))
    for note in result["notes"]:
        log(note)


if __name__ == "__main__":
    main()
