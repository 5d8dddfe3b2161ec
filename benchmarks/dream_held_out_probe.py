"""Where DREAM loses return on distraction's held-out ids: loads DREAM run folders on distraction
and, per seed, plays greedy trials on `--tasks` held-out ids (sampled with PRNGKey(0)) and on the
training ids, then reports

- the exploitation return held out, with the run's own explorer and the decoder's z (the score);
- the same on the training ids (the gap is what does not generalise);
- held out, with a scripted explorer that rides the three first helpful buses there and back and
  nothing else (the decoder's z): what the decoder and the exploitation policy make of the
  helpful rides alone;
- held out, the exploitation reading f of a training id with the same helpful permutation (the
  buses that matter known, the distracting ones not): the exploitation learner's own ceiling;
- the own explorer's steps and the distinct helpful and useless buses it rides (held out);
- f's size ||f||^2 over the training ids and the share of it that tells apart ids of one helpful
  permutation (the mean squared distance to their permutation's mean, over ||f||^2): what f knows
  of the distracting buses.

The training split (ids 0, 11, 22, ...: id = helpful + 24 x useless permutation) ties each useless
permutation to 2-3 helpful ones, so on the training ids a useless ride carries information about
the helpful buses; on held-out ids it misleads.

    python -m benchmarks.dream_held_out_probe RUN [RUN ...] [--tasks 512] [--tag TAG]

Written to benchmarks/results/dream_held_out_probe[_TAG].{json,md}.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from benchmarks.dream_decoder_probe import SCRIPTS, rides
from benchmarks.dream_exploit_ceiling import greedy_trials

from metarl.algos.dream import DreamConfig, DreamNetworks
from metarl.envs.dream_grid import BUS_SOURCES, USELESS_SOURCES
from metarl.run import folder
from metarl.run.evaluation import load_run, seed_slice

SHOWN = ("exploit_learner", "noise", "bottleneck", "bottleneck_coef", "info_penalty", "dqn_steps", "decoder", "id_init")
#: shown too where a run sets them away from DreamConfig's defaults
SHOWN_SET = ("explore_full_steps", "explore_epsilon_steps", "leave_one_out_reward", "leave_one_out_decoder", "leave_one_out_exploit")


def exploit_return(b) -> float:
    return float((b["reward"] * ((b["episode"] >= 1) & b["valid"])).sum(0).mean())


def probe_seed(algo, params, train, held_out) -> dict:
    key = jax.random.PRNGKey(1)
    f_train = np.asarray(algo.agent().network.apply(params, jnp.asarray(train), method=DreamNetworks.id_embedding))
    helpful = train % 24
    same = np.array([train[helpful == h][0] for h in held_out % 24])  # a training id with each held-out id's helpful permutation
    own, _ = greedy_trials(algo, params, len(held_out), False, key, ids=held_out)
    on_train, _ = greedy_trials(algo, params, len(train), False, key, ids=train)
    scripted, _ = greedy_trials(algo, params, len(held_out), False, key, ids=held_out, explore=SCRIPTS["3 buses"])
    z = algo.agent().network.apply(params, jnp.asarray(same), method=DreamNetworks.id_embedding)
    known, _ = greedy_trials(algo, params, len(held_out), True, key, ids=held_out, z=z)
    means = {h: f_train[helpful == h].mean(0) for h in np.unique(helpful)}
    spread = np.mean([np.sum(np.square(f_train[j] - means[helpful[j]])) for j in range(len(train))])
    norm = float(np.sum(np.square(f_train), -1).mean())
    n = len(held_out)
    return {"held_out": exploit_return(own), "train": exploit_return(on_train), "held_out_scripted_helpful": exploit_return(scripted),
            "held_out_reading_f_same_helpful": exploit_return(known),
            "explore_steps": float(((own["episode"] == 0) & own["valid"]).sum(0).mean()),
            "helpful_buses": float(np.mean([rides(own, j, BUS_SOURCES) for j in range(n)])),
            "useless_buses": float(np.mean([rides(own, j, USELESS_SOURCES) for j in range(n)])),
            "id_norm": norm, "within_permutation_share": float(spread / max(norm, 1e-12))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="DREAM run folders on distraction")
    parser.add_argument("--tasks", type=int, default=512, help="held-out ids per seed (drawn with replacement)")
    parser.add_argument("--tag", default="", help="write dream_held_out_probe_TAG.* (keeps other results)")
    args = parser.parse_args(argv)
    entries, rows = [], []
    defaults = folder.jsonable(DreamConfig())
    for run in args.runs:
        if not os.path.exists(os.path.join(run, "config.json")):
            parser.error(f"{run} is not a run folder (no config.json)")
        _, algo, seeds, state, header, _ = load_run(run, None, lambda *a: None)
        if algo.name != "dream" or algo.env.name != "distraction":
            parser.error(f"{run} is {algo.name} on {algo.env.name}; this script reads DREAM runs on distraction")
        env = algo.env
        train = np.asarray(env.split_ids("train"))
        held_out = np.random.default_rng(0).choice(np.asarray(env.split_ids("test")), args.tasks)
        per_seed = [probe_seed(algo, seed_slice(state, i).params, train, held_out) for i in range(seeds)]
        config = folder.jsonable(algo.config)
        saved = folder.read_config(run)
        entries.append({"run_folder": run, "command": " ".join(saved.get("command") or []), "env_steps": header.get("env_steps"),
                        "config": config, "per_seed": per_seed})
        setting = ", ".join([f"{k} {config[k]}" for k in SHOWN] + [f"{k} {config[k]}" for k in SHOWN_SET if config[k] != defaults[k]])
        for i, p in enumerate(per_seed):
            rows.append([f"`{run}` seed {i}" + (f" ({setting})" if i == 0 else ""), f"{p['held_out']:.3f}", f"{p['train']:.3f}",
                         f"{p['held_out_scripted_helpful']:.3f}", f"{p['held_out_reading_f_same_helpful']:.3f}",
                         f"{p['explore_steps']:.1f}", f"{p['helpful_buses']:.2f}", f"{p['useless_buses']:.2f}",
                         f"{p['id_norm']:.3f}", f"{p['within_permutation_share']:.3f}"])
        print(rows[-1], flush=True)
    command = "python -m benchmarks.dream_held_out_probe " + " ".join(args.runs) + (f" --tasks {args.tasks}" if args.tasks != 512 else "") + (f" --tag {args.tag}" if args.tag else "")
    data = {"meta": common.machine(), "command": command, "tasks": args.tasks, "runs": entries}
    md = "\n".join([
        "# DREAM on distraction's held-out ids: where the return is lost", "",
        f"Produced by `{command}` ({data['meta']['machine']}); do not edit by hand. Greedy trials, exploitation return "
        f"(optimum 0.8, no information 0.3); {args.tasks} held-out ids per seed, every training id once. Columns: held out "
        "(own explorer, the decoder's z: the score); training ids (the same); held out with a scripted explorer riding "
        "three helpful buses there and back; held out reading f of a training id with the same helpful permutation (the "
        "exploitation learner's ceiling); the own explorer's steps and distinct helpful / useless buses held out; ||f||^2; "
        "the share of ||f||^2 that tells apart ids of one helpful permutation.", "",
        "Each run's command and full config are in the JSON (and its config.json); the settings that differ between them are "
        "in the first column. The config is what a run ran: the `dream-2000000-held-out-dqn-*` folders were made by "
        "`benchmarks.dream_compare` with a preset of the day (now removed), the others by `metarl train` with the flags "
        "their command shows.", "",
        common.markdown_table(["run", "held out", "training ids", "held out, helpful rides scripted", "held out, reading f (same helpful)",
                               "explore steps", "helpful buses", "useless buses", "||f||^2", "within-permutation share"], rows), "",
    ])
    common.write_results("dream_held_out_probe" + (f"_{args.tag}" if args.tag else ""), data, md)
    print(md)


if __name__ == "__main__":
    main()
