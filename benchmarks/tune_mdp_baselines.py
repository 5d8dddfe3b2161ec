"""Tune the tabular-MDP baselines' hyperparameters per setting, as Duan et al. (2016) did, then
score every MDP baseline column of RL²'s table at the tuned values.

1. Grid search. For each hyperparameter value, one 100-episode trial per tuning task; tuning task i
   is `sample_task(PRNGKey(1000 + i))`, disjoint from evaluation (seed 0). None of these agents
   reads the trial length n, so the first n episodes of a 100-episode trial are an n-episode trial:
   one run scores every setting n in {10, 25, 50, 75, 100} (common random numbers across values).
   The chosen value per n maximises the mean total reward over the first n episodes.
2. Evaluation. Every baseline at its tuned values (the table `TUNED_MDP` in metarl/baselines/mdp.py,
   which must hold the values chosen in step 1; the script checks it) on 1000 tasks drawn from seed 0,
   one `evaluate` call per (baseline, n), beside the reference. Time after compilation is measured
   on the full 1000 tasks after a warm-up call on the first 250 (same batch shape).

    python benchmarks/tune_mdp_baselines.py [--tune-tasks 500] [--eval-tasks 1000] [--skip-tune]

Writes benchmarks/results/tune_mdp.{json,md}."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reference_tables as ref  # noqa: E402

from metarl.baselines import make  # noqa: E402
from metarl.baselines.mdp import PSRL, TUNED_MDP, finite_horizon_q_values, sample_posterior_mdp  # noqa: E402
from metarl.envs.registry import make as make_env  # noqa: E402
from metarl.eval.evaluate import evaluate  # noqa: E402

SETTINGS = (10, 25, 50, 75, 100)
TUNE_SEED_BASE = 1000
EVAL_SEED = 0
#: baseline -> list of hyperparameter dicts searched
GRIDS = {
    "eps-greedy": [{"eps": e} for e in (0.0, 0.02, 0.05, 0.1, 0.2)],
    "opsrl": [{"samples": k} for k in (1, 2, 3, 5, 10)],
    "ucrl2": [{"delta": d, "scaling": c} for d in (0.01, 0.05, 0.2) for c in (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)],
    "beb": [{"beta": b} for b in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)],
}
COLUMNS = ["Random", "PSRL", "OPSRL", "UCRL2", "BEB", "eps-Greedy", "Greedy"]
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

#: why a cell misses the 2% target (filled from the measured numbers; see the Markdown)
EXPLANATIONS = {
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
    keys = jax.numpy.stack([jax.random.PRNGKey(TUNE_SEED_BASE + i) for i in range(num)])
    return jax.vmap(env.sample_task)(keys)


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


def evaluate_tuned(env, num_tasks, log):
    key_tasks, key_eval = jax.random.split(jax.random.PRNGKey(EVAL_SEED))
    tasks = env.sample_tasks(key_tasks, num_tasks)
    warm = min(250, num_tasks)
    table = []
    for n in SETTINGS:
        row = {"episodes": n, "cells": []}
        for column in COLUMNS + ["Oracle"]:
            name = ref.MDP_AGENTS.get(column, "oracle")
            agent = make(name, env, n)  # tuned defaults for this n
            t0 = time.time()
            evaluate(agent, None, env, jax.tree.map(lambda x: x[:warm], tasks), n, key_eval, batch_size=warm)
            compile_and_warm = time.time() - t0
            t0 = time.time()
            returns = evaluate(agent, None, env, tasks, n, key_eval, batch_size=warm)
            seconds = time.time() - t0
            total = returns.sum(1)
            mean = float(total.mean())
            ci = float(1.96 * total.std() / np.sqrt(num_tasks))
            reference = ref.mdp_reference(n, column) if column != "Oracle" else None
            rel = None if reference is None else (mean - reference) / reference
            row["cells"].append({
                "column": column, "agent": agent.label(), "ours": mean, "ci95": ci, "reference": reference,
                "relative_diff": rel, "within_2pct_or_better": None if rel is None else bool(rel >= -0.02),
                "eval_seconds": seconds, "first_call_seconds": compile_and_warm,
            })
            log(f"eval n={n} {agent.label()}: {mean:.1f} ± {ci:.1f} (ref {reference}) {seconds:.2f}s")
        table.append(row)
    return table


@dataclasses.dataclass(frozen=True)
class PSRLWithPriorMean(PSRL):
    """Diagnostic only: PSRL whose reward prior mean is `mu0` instead of the family's (TabulaRL's
    PSRL, behind RL²'s column, defaults to mu0 = 0 with tau0 = tau = 1)."""

    mu0: float = 0.0

    def plan(self, key, params, counts):
        prior_env = dataclasses.replace(self.env, reward_mean=self.mu0)
        reward, transitions = sample_posterior_mdp(key, prior_env, counts)
        return finite_horizon_q_values(reward, transitions, self.env.horizon)


def prior_diagnostic(env, num_tasks, log):
    """PSRL with the true prior mean (1) and TabulaRL's default (0), same tasks as the evaluation."""
    key_tasks, key_eval = jax.random.split(jax.random.PRNGKey(EVAL_SEED))
    tasks = env.sample_tasks(key_tasks, num_tasks)
    rows = []
    for n in (10, 25):
        for mu0 in (env.reward_mean, 0.0):
            total = evaluate(PSRLWithPriorMean(env=env, episodes=n, mu0=mu0), None, env, tasks, n, key_eval).sum(1)
            rows.append({"episodes": n, "mu0": mu0, "ours": float(total.mean()), "ci95": float(1.96 * total.std() / np.sqrt(num_tasks)),
                         "reference": ref.mdp_reference(n, "PSRL")})
            log(f"diagnostic psrl n={n} mu0={mu0}: {rows[-1]['ours']:.1f}")
    return rows


def markdown(result):
    lines = ["# Tabular-MDP baselines: tuning and RL² table", ""]
    lines += [f"Command: `{result['command']}`  ", f"Wall time: tuning {result.get('tune_wall_seconds') or 0:.0f} s, evaluation {result.get('eval_wall_seconds') or 0:.0f} s on {result['machine']}  ",
              f"Tuning tasks: {result['tune_tasks']} (task i = sample_task(PRNGKey({TUNE_SEED_BASE} + i)), evaluation key "
              f"PRNGKey({TUNE_SEED_BASE - 1})); evaluation tasks: {result['eval_tasks']} from seed {EVAL_SEED}.", ""]
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
    if result.get("evaluation"):
        lines += ["## Ours vs reference at the tuned values (1000 tasks, seed 0; mean total reward ± 95% CI)", "",
                  "| n | " + " | ".join(COLUMNS + ["Oracle"]) + " |", "|---|" + "---|" * (len(COLUMNS) + 1)]
        for row in result["evaluation"]:
            cells = []
            for c in row["cells"]:
                if c["reference"] is None:
                    cells.append(f"{c['ours']:.1f} ± {c['ci95']:.1f}")
                else:
                    flag = "" if c["within_2pct_or_better"] else " ✗"
                    cells.append(f"{c['ours']:.1f} ± {c['ci95']:.1f} (ref {c['reference']}, {100 * c['relative_diff']:+.1f}%){flag}")
            lines.append(f"| {row['episodes']} | " + " | ".join(cells) + " |")
        lines += ["", "✗ = more than 2% below the reference.", "", "### Evaluation time per baseline (1000 trials, after compilation, seconds)", "",
                  "| n | " + " | ".join(COLUMNS + ["Oracle"]) + " |", "|---|" + "---|" * (len(COLUMNS) + 1)]
        for row in result["evaluation"]:
            lines.append(f"| {row['episodes']} | " + " | ".join(f"{c['eval_seconds']:.2f}" for c in row["cells"]) + " |")
        lines += ["", "Timed on a 2-core CPU shared with other jobs (wall clock; treat as upper bounds).", ""]
        misses = sorted({c["column"] for row in result["evaluation"] for c in row["cells"] if c["within_2pct_or_better"] is False})
        above = sorted({c["column"] for row in result["evaluation"] for c in row["cells"]
                        if c["relative_diff"] is not None and c["relative_diff"] > 0.02})
        lines += ["## Cells off the reference, and why", ""]
        lines.append(f"More than 2% below: {', '.join(misses) or 'none'}. More than 2% above: {', '.join(above) or 'none'}.")
        lines.append("")
        for column in COLUMNS:
            if column in misses or column in above:
                lines.append(f"- **{column}**: {result['explanations'].get(column, 'see notes')}")
        lines.append("")
    if result.get("prior_diagnostic"):
        lines += ["### Diagnostic: PSRL's reward prior mean (same 1000 evaluation tasks, seed 0)", "",
                  "| n | prior mean mu0 | ours | reference PSRL |", "|---|---|---|---|"]
        for r in result["prior_diagnostic"]:
            lines.append(f"| {r['episodes']} | {r['mu0']} | {r['ours']:.1f} ± {r['ci95']:.1f} | {r['reference']} |")
        lines.append("")
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune-tasks", type=int, default=500)
    parser.add_argument("--eval-tasks", type=int, default=1000)
    parser.add_argument("--skip-tune", action="store_true", help="reuse the tuning block of the existing JSON")
    parser.add_argument("--skip-eval", action="store_true")
    args = parser.parse_args(argv)
    os.makedirs(RESULTS, exist_ok=True)
    path_json = os.path.join(RESULTS, "tune_mdp.json")
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    start = time.time()
    env = make_env("tabular-mdp")
    previous = json.load(open(path_json)) if os.path.exists(path_json) else {}
    result = {
        "command": "python benchmarks/tune_mdp_baselines.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, jax {jax.__version__} {jax.default_backend()}",
        "tune_tasks": args.tune_tasks, "eval_tasks": args.eval_tasks,
        "tune_seeds": f"PRNGKey({TUNE_SEED_BASE} + i), i < {args.tune_tasks}", "eval_seed": EVAL_SEED,
        "grids": GRIDS, "explanations": EXPLANATIONS, "notes": [],
    }
    t0 = time.time()
    result["tuning"] = previous.get("tuning") if args.skip_tune else tune(env, args.tune_tasks, log)
    result["tune_wall_seconds"] = previous.get("tune_wall_seconds") if args.skip_tune else time.time() - t0
    if result["tuning"]:
        result["tune_tasks"] = previous.get("tune_tasks", args.tune_tasks) if args.skip_tune else args.tune_tasks
        for name, block in result["tuning"].items():
            for n in SETTINGS:
                recorded = TUNED_MDP[n].get(name)
                if recorded != block["chosen"][str(n)]:
                    result["notes"].append(f"TUNED_MDP[{n}][{name!r}] = {recorded} differs from the search's choice "
                                           f"{block['chosen'][str(n)]}: update metarl/baselines/mdp.py and rerun the evaluation.")
    t0 = time.time()
    result["evaluation"] = previous.get("evaluation") if args.skip_eval else evaluate_tuned(env, args.eval_tasks, log)
    result["eval_wall_seconds"] = previous.get("eval_wall_seconds") if args.skip_eval else time.time() - t0
    result["prior_diagnostic"] = previous.get("prior_diagnostic") if args.skip_eval else prior_diagnostic(env, args.eval_tasks, log)
    result["wall_seconds"] = time.time() - start
    with open(path_json, "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(RESULTS, "tune_mdp.md"), "w") as f:
        f.write(markdown(result))
    for note in result["notes"]:
        log(note)


if __name__ == "__main__":
    main()
