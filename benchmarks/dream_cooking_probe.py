"""Where DREAM's return on cooking's held-out id is won or lost: loads DREAM run folders on cooking
and, per seed, plays greedy trials on the test id (drawers 2, 2, 0; no training id has them) and
on the training ids, and reports

- the test id with the run's own explorer and decoder (what `dream_compare` scores), split by the
  instruction's two ingredients, with which drawers the explorer picked from, its steps, and the
  decoder's posterior: its weight on the nine training ids that share two of the test id's three
  drawers (the best a posterior over the training ids can do) and its three heaviest ids;
- the test id with the exploitation reading the mean of f over those nine ids (an exact reader
  over the training ids; the exploitation learner's ceiling on this id);
- with `id_factored` (f a sum of one part per drawer, so the test id has an f of trained parts),
  the test id with the exploitation reading f(test id);
- the training ids with the own decoder, with the decoder's posterior leaving the trial's own id
  out (as if it were held out), and with the exploitation reading f(id).

The greedy agent explores the one test id the same way every time, so each seed's held-out score
is one decoded z, read with every instruction.

    python -m benchmarks.dream_cooking_probe RUN [RUN ...] [--trials 360] [--tag TAG]

Written to benchmarks/results/dream_cooking_probe[_TAG].{json,md}.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from benchmarks.dream_exploit_ceiling import greedy_trials
from benchmarks.dream_held_out_score import changed_options
from metarl.algos.dream import DreamNetworks
from metarl.envs import dream_optimal
from metarl.envs.dream_grid import DRAWER_CELLS, INGREDIENTS, PICKUP, Cooking
from metarl.run.evaluation import load_run, seed_slice


def digits(task_id: int) -> tuple[int, ...]:
    return tuple(int(x) for x in np.asarray(Cooking.drawer_contents(task_id)))


def two_match_ids(train: np.ndarray, test: int) -> np.ndarray:
    """The training ids whose drawers agree with the test id's in exactly two of three."""
    return np.array([i for i in train if sum(a == b for a, b in zip(digits(i), digits(test))) == 2], np.int32)


def exploit_summary(b, env) -> dict:
    """Exploitation return (mean, and by the instruction's two ingredients) of greedy trials `b`."""
    exploit = (b["episode"] >= 1) & b["valid"]
    returns = (b["reward"] * exploit).sum(0)
    first = np.argmax(exploit, 0)
    n = returns.shape[0]
    instruction = b["obs"][first, np.arange(n), -env.instruction_size:].reshape(n, 2, INGREDIENTS).argmax(-1)
    by = {}
    for pair, r in zip(map(tuple, instruction), returns):
        by.setdefault(f"{pair[0]},{pair[1]}", []).append(float(r))
    return {"return": float(returns.mean()), "by_instruction": {k: {"return": float(np.mean(v)), "trials": len(v)} for k, v in sorted(by.items())}}


def probe_seed(algo, params, trials: int, key) -> dict:
    env = algo.env
    train, test = np.asarray(env.train_ids()), int(env.test_ids()[0])
    net = algo.agent().network
    f = np.asarray(net.apply(params, jnp.asarray(train), method=DreamNetworks.id_embedding))
    near = two_match_ids(train, test)
    out = {"id_norm": float(np.mean((f ** 2).sum(1)))}

    b, _ = greedy_trials(algo, params, trials, False, key, ids=np.full(trials, test))
    own = exploit_summary(b, env)
    exploring = (b["episode"] == 0) & b["valid"]
    first = np.argmax(b["episode"] >= 1, 0)
    pos = b["obs"][..., :2]
    picked = np.stack([((pos[..., 0] == x) & (pos[..., 1] == y) & (b["action"] == PICKUP) & exploring).any(0) for x, y in DRAWER_CELLS], 1)
    weights = np.asarray(jax.nn.softmax(b["h"][first, np.arange(trials)], -1)).mean(0)
    top = np.argsort(-weights)[:3]
    z = b["g"][first, np.arange(trials)]
    out["test"] = {**own, "explore_steps": float(exploring.sum(0).mean()), "drawers_picked": [float(x) for x in picked.mean(0)],
                   "weight_two_match": float(weights[np.isin(train, near)].sum()),
                   "top_ids": [[digits(train[k]), float(weights[k])] for k in top],
                   "z_distance_to_two_match_mean": float(((z - f[np.isin(train, near)].mean(0)) ** 2).sum(1).mean())}
    z_near = np.broadcast_to(f[np.isin(train, near)].mean(0), (trials, f.shape[1]))
    out["test_two_match_mean"] = exploit_summary(greedy_trials(algo, params, trials, True, key, ids=np.full(trials, test), z=z_near)[0], env)
    if algo.config.id_factored:  # (a table's row of the test id is never trained: nothing to read)
        out["test_with_id"] = exploit_summary(greedy_trials(algo, params, trials, True, key, ids=np.full(trials, test))[0], env)

    ids = np.asarray(jax.random.choice(jax.random.PRNGKey(1), jnp.asarray(train), (trials,)))
    out["train_own"] = exploit_summary(greedy_trials(algo, params, trials, False, key, ids=ids)[0], env)
    out["train_left_out"] = exploit_summary(greedy_trials(algo, params, trials, False, key, ids=ids, leave_out=True)[0], env)
    out["train_with_id"] = exploit_summary(greedy_trials(algo, params, trials, True, key, ids=ids)[0], env)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="DREAM run folders on cooking")
    parser.add_argument("--trials", type=int, default=360, help="greedy trials per seed and reading")
    parser.add_argument("--tag", default="", help="write dream_cooking_probe_TAG.* (keeps other results)")
    args = parser.parse_args(argv)
    entries = []
    for run in args.runs:
        if not os.path.exists(os.path.join(run, "config.json")):
            parser.error(f"{run} is not a run folder (no config.json)")
        _, algo, seeds, state, header, _ = load_run(run, None, lambda *a: None)
        if algo.name != "dream" or algo.env.name != "cooking" or algo.config.decoder != "posterior":
            parser.error(f"{run} is not a DREAM run on cooking with the posterior decoder")
        per_seed = [probe_seed(algo, seed_slice(state, i).params, args.trials, jax.random.PRNGKey(0)) for i in range(seeds)]
        env = algo.env
        entries.append({"run_folder": run, "env_steps": header.get("env_steps"), "changed_options": changed_options(algo),
                        "optimal_test": float(np.mean(dream_optimal.full_information(env, env.test_ids()))),
                        "optimal_train": float(np.mean(dream_optimal.full_information(env, env.train_ids()))), "per_seed": per_seed})
    command = "python -m benchmarks.dream_cooking_probe " + " ".join(args.runs) + f" --trials {args.trials}" + (f" --tag {args.tag}" if args.tag else "")
    data = {"meta": common.machine(), "command": command, "trials": args.trials, "entries": entries}
    lines = ["# DREAM on cooking's held-out id, probed per seed", "",
             f"Produced by `{command}` ({data['meta']['machine']}); do not edit by hand. Greedy trials, {args.trials} per seed "
             "and reading. The test id's drawers are (2, 2, 0); two-match ids: the nine training ids that share two of them. "
             "Instructions are written as first,second ingredient.", ""]
    for e in entries:
        options = ", ".join(f"{k}={v}" for k, v in e["changed_options"].items()) or "(the family's preset)"
        lines += [f"## {e['run_folder']} ({e['env_steps']:,} env steps per seed; {options})", "",
                  f"Optimum: test id {e['optimal_test']:.3f}, training ids {e['optimal_train']:.3f}.", ""]
        rows = []
        for i, s in enumerate(e["per_seed"]):
            t = s["test"]
            by = lambda r: " ".join(f"({k}) {v['return']:.2f}" for k, v in r["by_instruction"].items())  # noqa: E731
            rows.append([str(i), f"{t['return']:.3f}", by(t), f"{t['explore_steps']:.1f}", " ".join(f"{x:.2f}" for x in t["drawers_picked"]),
                         f"{t['weight_two_match']:.2f}", ", ".join(f"{d} {w:.2f}" for d, w in t["top_ids"]),
                         f"{s['test_two_match_mean']['return']:.3f}", by(s["test_two_match_mean"]),
                         f"{s['test_with_id']['return']:.3f}" if "test_with_id" in s else "—",
                         f"{s['train_own']['return']:.3f}", f"{s['train_left_out']['return']:.3f}", f"{s['train_with_id']['return']:.3f}",
                         f"{s['id_norm']:.2f}"])
        lines += [common.markdown_table(["seed", "test id", "by instruction", "explore steps", "drawers picked from", "posterior on two-match ids",
                                         "heaviest ids (drawers, weight)", "test id, z = mean f(two-match)", "by instruction", "test id, z = f(test id) (factored f)",
                                         "training ids", "training ids, own id left out", "training ids, f(id)", "mean ||f||²"], rows), ""]
    md = "\n".join(lines)
    common.write_results("dream_cooking_probe" + (f"_{args.tag}" if args.tag else ""), data, md)
    print(md)


if __name__ == "__main__":
    main()
