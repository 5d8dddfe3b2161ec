"""What a trained DREAM decoder can read, on the bus families (city, distraction): loads a run
folder (by default `dream_compare`'s city run) and, per seed, plays exploration episodes that are
scripted (end at once; ride 1, 2, 3 or all 4 of the helpful buses, each there and back) or the
run's own greedy explorer, then reports on the family's training ids:

- the decoder's error ||g(tau) - f(id)||^2 after the exploration episode;
- the error of the ideal decoder for the same episode: the mean of f over the training ids that
  agree with every bus ride the episode saw (a uniform posterior over the ids), which is what the
  decoder's squared loss is minimised by;
- the greedy exploitation return reading the decoder's z;
- for the own explorer: its steps and the distinct helpful (and, on distraction, useless) buses it
  rode.

A decoder that reads any exploration generalises; one that reads only the paths its explorer takes
leaves the explorer no reward for a ride it has not yet taken (the information gain of a ride the
decoder cannot read is zero or negative), which is where DREAM's explorer stops.

    python -m benchmarks.dream_decoder_probe [runs/dream_compare/city/dream-2000000] [--ids 48] [--tag TAG]

Written to benchmarks/results/dream_decoder_probe_FAMILY.{json,md} (FAMILY_TAG with `--tag TAG`).
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from benchmarks.dream_exploit_ceiling import greedy_trials

from metarl.algos.dream import DreamNetworks
from metarl.envs.dream_grid import BUS_SOURCES, DOWN, LEFT, RIDE_BUS, RIGHT, UP, USELESS_SOURCES
from metarl.run import folder
from metarl.run.evaluation import load_run, seed_slice

DEFAULT_RUN = os.path.join("runs", "dream_compare", "city", "dream-2000000")
# from the start (4, 4): the buses at (4, 5), (5, 4), (3, 4), (4, 3), each ridden there and back
_THERE_AND_BACK = [[UP, RIDE_BUS, RIDE_BUS], [DOWN, RIGHT, RIDE_BUS, RIDE_BUS], [LEFT, LEFT, RIDE_BUS, RIDE_BUS], [DOWN, RIGHT, RIDE_BUS]]
SCRIPTS = {"end at once": []} | {f"{k} bus{'es' if k > 1 else ''}": sum(_THERE_AND_BACK[:k], []) for k in range(1, 5)}
OWN = "own explorer (greedy)"


def ideal_error(env, ids, f, b):
    """[ids] ||mean of f over the ids in `ids` that agree with every ride seen while exploring - f(id)||^2."""
    teleports = env.teleports()  # [num_ids, 9, 9, 2]
    exploring = (b["episode"] == 0) & b["valid"] & (b["action"] == RIDE_BUS)
    out = np.zeros(len(ids))
    for j in range(len(ids)):
        agree = np.ones(len(ids), bool)
        for t in np.flatnonzero(exploring[:, j]):
            x, y = b["obs"][t, j, :2].astype(int)
            agree &= np.all(teleports[ids, x, y] == b["next_obs"][t, j, :2].astype(int), axis=-1)
        out[j] = np.sum(np.square(f[agree].mean(0) - f[j]))
    return out


def rides(b, j, sources) -> int:
    """Distinct buses (by their source cells `sources`) trial j rode, either way, while exploring."""
    cells = [tuple(c) for c in np.asarray(sources).tolist()]
    seen = set()
    for t in np.flatnonzero((b["episode"][:, j] == 0) & b["valid"][:, j] & (b["action"][:, j] == RIDE_BUS)):
        for cell in (tuple(b["obs"][t, j, :2].astype(int).tolist()), tuple(b["next_obs"][t, j, :2].astype(int).tolist())):
            if cell in cells:  # from the source, or from its destination back to it
                seen.add(cells.index(cell))
    return len(seen)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", default=DEFAULT_RUN, help="a DREAM run folder on city or distraction")
    parser.add_argument("--ids", type=int, default=0, help="training ids to probe (0: all)")
    parser.add_argument("--tag", default="", help="write dream_decoder_probe_FAMILY_TAG.* (keeps another run's results)")
    args = parser.parse_args(argv)
    if not os.path.exists(os.path.join(args.run, "config.json")):
        parser.error(f"{args.run} is not a run folder (no config.json); run benchmarks.dream_compare first")
    _, algo, seeds, state, header, _ = load_run(args.run, None, lambda *a: None)
    env = algo.env
    if algo.name != "dream" or env.name not in ("city", "distraction"):
        parser.error(f"{args.run} is {algo.name} on {env.name}; this script reads DREAM runs on city or distraction")
    ids = np.asarray(env.split_ids("train"))
    ids = ids[: args.ids] if args.ids else ids
    per_seed, rows = [], []
    for i in range(seeds):
        params = seed_slice(state, i).params
        entry = {"seed": i}
        f = np.asarray(algo.agent().network.apply(params, jnp.asarray(ids), method=DreamNetworks.id_embedding))
        for name, script in list(SCRIPTS.items()) + [(OWN, None)]:
            b, _ = greedy_trials(algo, params, len(ids), False, jax.random.PRNGKey(0), ids=ids, explore=script)
            first = np.argmax(b["episode"] >= 1, axis=0)
            g_read = b["g"][first, np.arange(len(ids))]
            error = np.sum(np.square(g_read - f), -1)
            ideal = ideal_error(env, ids, f, b)
            exploit = (b["episode"] >= 1) & b["valid"]
            ret = (b["reward"] * exploit).sum(0)
            e = {"decoder_error": float(error.mean()), "ideal_error": float(ideal.mean()), "exploit_return": float(ret.mean())}
            if script is None:
                e["steps"] = float(((b["episode"] == 0) & b["valid"]).sum(0).mean())
                e["helpful_buses"] = float(np.mean([rides(b, j, BUS_SOURCES) for j in range(len(ids))]))
                if env.name == "distraction":
                    e["useless_buses"] = float(np.mean([rides(b, j, USELESS_SOURCES) for j in range(len(ids))]))
            entry[name] = e
            extra = f" ({e['steps']:.1f} steps, {e['helpful_buses']:.2f} helpful buses" + (
                f", {e['useless_buses']:.2f} useless)" if "useless_buses" in e else ")") if script is None else ""
            rows.append([i, name + extra, f"{e['decoder_error']:.2f}", f"{e['ideal_error']:.2f}", f"{e['exploit_return']:.3f}"])
        entry["id_norm"] = float(np.sum(np.square(f), -1).mean())
        per_seed.append(entry)
    command = f"python -m benchmarks.dream_decoder_probe {args.run}" + (f" --ids {args.ids}" if args.ids else "") + (
        f" --tag {args.tag}" if args.tag else "")
    data = {"meta": common.machine(), "command": command, "run_folder": args.run, "family": env.name, "env_steps": header.get("env_steps"),
            "config": folder.jsonable(algo.config), "ids": ids.tolist(), "scripts": {k: list(v) for k, v in SCRIPTS.items()},
            "per_seed": per_seed}
    md = "\n".join([
        f"# What DREAM's decoder reads ({env.name})", "",
        f"Produced by `{command}` ({data['meta']['machine']}); do not edit by hand. Run: {args.run} "
        f"({header.get('env_steps'):,} env steps per seed). One greedy trial per training id ({len(ids)}): the exploration "
        "episode scripted (each bus ridden there and back, then end_episode) or the run's own explorer; the exploitation "
        "episode reads the decoder's z. Decoder error: ||g(tau) - f(id)||^2 after the exploration episode (||f||^2 "
        f"{np.mean([p['id_norm'] for p in per_seed]):.2f}); ideal: the same for the mean of f over the training ids that agree "
        "with every ride the episode saw.", "",
        common.markdown_table(["seed", "exploration", "decoder error", "ideal decoder error", "exploitation return"], rows), "",
    ])
    common.write_results(f"dream_decoder_probe_{env.name}" + (f"_{args.tag}" if args.tag else ""), data, md)
    print(md)


if __name__ == "__main__":
    main()
