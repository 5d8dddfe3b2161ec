"""The command line: the only place in metarl that parses arguments.

    metarl list
    metarl train ALGO FAMILY [family options] [algorithm options] --steps N --out DIR [--seeds S] [--resume]
    metarl eval RUN [--tasks T] [--json P] [--plot P]
    metarl baselines FAMILY [family options] --episodes N --tasks T --seed S [--agents a,b] [--json P] [--plot P]

How it is built. The top level is a dispatch table, `COMMANDS` (name -> `Command`), not one tyro
parser: a subcommand's flags depend on the names that follow it (`metarl baselines bandit` has
`--arms`, `metarl baselines tabular-mdp` has `--states`), so each subcommand first reads its
positional names, checks them against the registries (an unknown name is a `ConfigError` whose
one-line message lists the valid names), and then lets tyro parse the real dataclasses those names
select: the family class, the algorithm's config (starting from a preset), `run.TrainSettings`,
and the small option classes below. Their field types, defaults and `#:` comments are the flags'
types, defaults and help; tyro's `OmitArgPrefixes` keeps the flags flat (`--arms`, `--hidden`,
`--steps`). A new family, baseline or config field gets its flag with no change here, and nothing
here knows any algorithm: what depends on the setting (the preset an algorithm trains best with,
a schedule spanning the run) is asked of the algorithm (`default_preset`, `for_run`).

`main(argv)` returns the exit code: 0; for an error metarl raises on purpose (`MetarlError`) its
message on one line of stderr and its `exit_code` (2 for bad input, 1 for a run that diverged),
from one handler that also names the flag of the config field at fault (`--steps`, not
`total_steps`); tyro's own exits for --help (0) and malformed flags (2). Tests call it in-process.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import textwrap
from typing import Annotated, Any, Callable, Sequence

from metarl.errors import ConfigError, MetarlError
from metarl.flags import NamesFlag as _NAMES

__all__ = ["COMMANDS", "Command", "command", "parse", "take_names", "main"]

PROG = "metarl"

OVERVIEW = """\
metarl: meta-reinforcement learning in JAX. Agents that learn, across a distribution of tasks
(Bernoulli bandits, random tabular MDPs, ...), how to explore and exploit a new task within a
trial of a few episodes; classical baselines (UCB1, Thompson sampling, Gittins, PSRL, ...) scored
on the same tasks with the same evaluator."""


# ---------------------------------------------------------------------------------------------
# the dispatch table
@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    summary: str  #: one line, shown by `metarl --help`
    usage: str
    example: str
    run: Callable[[list[str]], int]  #: takes the arguments after the command name, returns the exit code


#: name -> Command, in the order `metarl --help` lists them
COMMANDS: dict[str, Command] = {}


def command(name: str, summary: str, usage: str, example: str):
    """Decorator: register `fn(args) -> exit code` as the subcommand `name`."""

    def deco(fn: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
        if name in COMMANDS:
            raise ValueError(f"command {name!r} defined twice")
        COMMANDS[name] = Command(name, summary, usage, example, fn)
        return fn

    return deco


# ---------------------------------------------------------------------------------------------
# parsing: tyro over real dataclasses
def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def parse(parts: Sequence[tuple[str, type, Any]], args: Sequence[str], prog: str, description: str, known_only: bool = False):
    """Parse `args` into the dataclasses `parts` = [(name, class, default instance or None)] with
    one flat set of flags (tyro, `OmitArgPrefixes`): returns {name: instance}. Two parts with a
    field of the same name are a programming error. `--help` prints the help and exits 0; a
    malformed value or an unknown flag prints tyro's message and exits 2 (SystemExit, caught by
    `main`). `known_only`: ignore flags of no part (and --help), for a first look at a few parts."""
    import tyro

    seen: dict[str, str] = {}
    for name, cls, _ in parts:
        for field in _fields(cls):
            if field in seen:
                raise ValueError(f"{prog}: --{field} is a field of both {seen[field]} and {name}")
            seen[field] = name
    shields = {name: _shielded(cls) for name, cls, _ in parts}
    required = [(name, shields[name]) for name, cls, default in parts if default is None]
    optional = [
        (name, shields[name], dataclasses.field(default=shields[name](**{f: getattr(default, f) for f in _fields(cls)})))
        for name, cls, default in parts
        if default is not None
    ]
    spec = dataclasses.make_dataclass("Options", required + optional, frozen=True)
    args = list(args)
    try:
        if known_only:
            args = [a for a in args if a not in ("-h", "--help")]
            parsed, _ = tyro.cli(spec, args=args, prog=prog, description=description, config=(tyro.conf.OmitArgPrefixes,), return_unknown_args=True)
        else:
            parsed = tyro.cli(spec, args=args, prog=prog, description=description, config=(tyro.conf.OmitArgPrefixes,))
    except _Escaped as escaped:
        raise escaped.error from None
    out = {}
    for name, cls, _ in parts:  # back to the real classes (already validated: no error here)
        value = getattr(parsed, name)
        out[name] = value if type(value) is cls else cls(**{f: getattr(value, f) for f in _fields(cls)})
    return out


class _Escaped(Exception):
    """Carries a MetarlError past tyro, which would reformat a ValueError raised by a constructor."""

    def __init__(self, error: MetarlError):
        super().__init__(str(error))
        self.error = error


def _shielded(cls: type) -> type:
    """`cls` for tyro: the same fields, docs and defaults, but its validation errors reach `main`'s
    handler (one line naming the flag) instead of tyro's message box."""
    real_init = cls.__init__

    def __init__(self, *args, **kwargs):
        try:
            real_init(self, *args, **kwargs)
        except MetarlError as error:
            raise _Escaped(error) from None

    return type(cls.__name__, (cls,), {"__init__": __init__, "__doc__": cls.__doc__, "__module__": cls.__module__})


def take_names(args: Sequence[str], what: Sequence[str], check: Sequence[Callable[[str], Any]]) -> tuple[list[str], list[str]]:
    """Split leading positional names (e.g. ALGO, FAMILY) off `args`, validating each with its
    registry lookup (which raises `ConfigError` listing the valid names). Returns (names, rest)."""
    names = []
    for i, (label, lookup) in enumerate(zip(what, check)):
        if i >= len(args) or args[i].startswith("-"):
            raise ConfigError(f"missing {label} (see --help)")
        lookup(args[i])
        names.append(args[i])
    return names, list(args[len(names):])


def _wants_help(args: Sequence[str]) -> bool:
    return not args or args[0] in ("-h", "--help")


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=200)  # pipes and files: do not wrap rows
    return console


def _describe(cmd_name: str, *paragraphs: str) -> str:
    """A subcommand's help text: its paragraphs wrapped to 100 columns, then its example."""
    text = "\n\n".join(textwrap.fill(p, 100, break_on_hyphens=False) for p in paragraphs)
    return f"{text}\n\nexample:\n  {COMMANDS[cmd_name].example}"


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    from metarl.eval import report

    columns, rows = report.table_rows(summary)
    console = _console()
    console.print(f"{report.title(summary)}; {summary['header']['interval']}")
    table = Table()
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _flag_message(error: ConfigError) -> str:
    """The error's message with its config field named as the flag that sets it."""
    from metarl.run.settings import TrainSettings, flag_name

    field = getattr(error, "field", None)
    message = str(error)
    if not field:
        return message
    flag = flag_name(TrainSettings, field) if field in _fields(TrainSettings) else "--" + field.replace("_", "-")
    return re.sub(rf"(?<![-\w]){re.escape(field)}(?![-\w])", flag, message, count=1)


# ---------------------------------------------------------------------------------------------
# metarl list
@command(
    "list",
    "List task families (with options and defaults), baselines and algorithms.",
    usage="metarl list",
    example="metarl list",
)
def list_command(args: list[str]) -> int:
    from metarl import algos, baselines, envs

    description = _describe(
        "list",
        "List what metarl can run: every task family with its options (the flags of `metarl baselines "
        "FAMILY`) and their defaults, every baseline with the families it applies to, and every training "
        "algorithm with its presets.",
    )
    parse([], args, prog="metarl list", description=description)
    console = _console()
    console.print("[bold]task families[/bold] (options with defaults)")
    for name in envs.names():
        fields = [f for f in dataclasses.fields(envs.family_class(name)) if f.init]
        opts = " ".join(f"--{f.name.replace('_', '-')} {f.default}" for f in fields)
        console.print(f"  {name:<18} {opts}")
    console.print("[bold]baselines[/bold] (families they apply to)")
    for name in baselines.names():
        console.print(f"  {name:<18} {', '.join(baselines.families(name))}")
    console.print("[bold]algorithms[/bold] (presets)")
    for name in algos.names() or ["(none yet)"]:
        presets = ", ".join(algos.algorithm_class(name).presets) if name in algos.names() else ""
        console.print(f"  {name:<18} {presets}")
    return 0


# ---------------------------------------------------------------------------------------------
# metarl baselines FAMILY ...
_BASELINES_TEXT = (
    "Evaluate classical baselines (Random, UCB1, Thompson sampling, Gittins, PSRL, the Oracle that knows "
    "the task, ...) on T tasks of a task family, every agent on the same tasks, one trial of N episodes "
    "each (for bandits an episode is one pull, so N is the number of pulls). Prints each agent's mean "
    "total return with a 95% t-interval over tasks, its regret against the Oracle (oracle total minus "
    "agent total, per task) and its compile and run time; --json and --plot also write the summary "
    "and the per-episode return curve. Family options are the family's own: see `metarl list`."
)


@dataclasses.dataclass(frozen=True)
class BaselinesOptions:
    """What to evaluate and where to write it."""

    episodes: int = 10  #: n, episodes per trial (pulls, for bandits)
    tasks: int = 1000  #: number of tasks sampled, every agent on the same ones
    seed: int = 0  #: tasks are env.sample_tasks(PRNGKey(seed), T)
    agents: Annotated[tuple[str, ...] | None, _NAMES] = None  #: comma-separated subset of baselines ("all": every one that applies)
    json: str | None = None  #: write the summary as JSON to this path
    markdown: str | None = None  #: write the table as Markdown to this path
    plot: str | None = None  #: write the per-episode return curves as PNG to this path


@command(
    "baselines",
    "Evaluate every applicable baseline on one task family; print the table.",
    usage="metarl baselines FAMILY [family options] --episodes N --tasks T --seed S [--agents A,B] [--json PATH] [--plot PATH]",
    example="metarl baselines bandit --arms 5 --episodes 10 --tasks 1000 --json out/bandit.json --plot out/bandit.png",
)
def baselines_command(args: list[str]) -> int:
    from metarl import baselines, envs
    from metarl.eval import report

    if _wants_help(args):
        families = ", ".join(envs.names())
        description = _describe(
            "baselines",
            _BASELINES_TEXT,
            f"FAMILY is one of: {families}. `metarl baselines FAMILY --help` also lists that family's options.",
        )
        parse([("options", BaselinesOptions, None)], ["--help"], prog="metarl baselines FAMILY", description=description)
        return 0
    (family,), rest = take_names(args, ["FAMILY"], [envs.family_class])
    description = _describe("baselines", _BASELINES_TEXT, f"Baselines for {family}: {', '.join(baselines.names(family))}.")
    parsed = parse([("family", envs.family_class(family), None), ("options", BaselinesOptions, None)], rest,
                   prog=f"metarl baselines {family}", description=description)
    env, o = parsed["family"], parsed["options"]
    names = None if o.agents is None else list(o.agents)
    if names is not None and report.ORACLE in baselines.names(family) and report.ORACLE not in names:
        names.append(report.ORACLE)  # the reference for the regret column
    status = _console(stderr=True)
    with status.status(f"evaluating baselines on {env.describe()} ..."):
        results = report.run_baselines(env, o.episodes, o.tasks, o.seed, names)
    summary = report.summarize(results)
    _print_summary(summary)
    if o.json:
        report.write_json(summary, o.json)
    if o.markdown:
        report.write_markdown(summary, o.markdown)
    if o.plot:
        report.plot_curves(summary, o.plot)
    return 0


# ---------------------------------------------------------------------------------------------
# metarl train ALGO FAMILY ..., metarl eval RUN ...  (the work is done by metarl.run)
_TRAIN_TEXT = (
    "Train ALGO on tasks from FAMILY (over trials of N episodes, for an in-context algorithm) and write "
    "the run folder --out: config.json (everything needed to rerun), metrics.jsonl (means over each chunk "
    "of updates, per seed and averaged), TensorBoard events, checkpoints/ (atomic, no pickle) and eval/ "
    "(held-out evaluations, beside the family's baselines for in-context agents, as JSON, Markdown and "
    "PNG). --steps counts environment steps per seed; --seeds independent seeds train at once (vmapped). "
    "Ctrl-C stops after the running chunk with a checkpoint; --resume continues a stopped or killed run "
    "from its last checkpoint with the same result as an uninterrupted run (give the same ALGO, FAMILY, "
    "options, --seeds and --seed; --steps may grow). Family options are the family's own and algorithm "
    "options the algorithm's config, whose defaults are the preset named by --preset or, without it, the "
    "one the algorithm chooses for this family and trial length (said below): see `metarl train ALGO "
    "FAMILY --help`."
)


@dataclasses.dataclass(frozen=True)
class PresetOption:
    """The algorithm's starting config."""

    preset: str | None = None  #: named config the algorithm options start from (None: the one chosen for this setting, named above)
    config: str | None = None  #: a JSON file of algorithm options applied over the preset (metarl tune's best_config.json, a run's config.json)


@dataclasses.dataclass(frozen=True)
class TrialOptions(PresetOption):
    """The trial and the algorithm's starting config."""

    #: n, episodes per trial (pulls, for bandits); None: 2 on a two-phase family (city, distraction,
    #: map, cooking: an exploration episode, then an exploitation episode, as DREAM's trial), else 10
    episodes: int | None = None


def trial_episodes(env, episodes: int | None) -> int:
    """The trial length --episodes gives on `env`: itself, or by default 2 on a two-phase family
    (an exploration and an exploitation episode) and 10 elsewhere."""
    if episodes is not None:
        return episodes
    return 2 if getattr(env, "two_phase", False) else 10


def _starting_point(algo_name: str, family: str, rest: Sequence[str]):
    """A first look at the family options, --episodes and --preset: (the config the algorithm's
    options start from, one line saying which and why)."""
    from metarl import algos, envs

    cls = algos.algorithm_class(algo_name)
    choice_cls = TrialOptions if cls.in_context else PresetOption
    first = parse(
        [("family", envs.family_class(family), None), ("choice", choice_cls, None)], rest, prog=f"metarl train {algo_name} {family}", description="",
        known_only=True,
    )
    episodes = trial_episodes(first["family"], first["choice"].episodes) if cls.in_context else None
    preset = first["choice"].preset
    presets = ", ".join(cls.presets) or "(none)"
    if preset is not None:
        start, which = algos.base.preset_config(algo_name, preset, first["family"], episodes), f"Options of {algo_name} start from preset {preset!r} (its presets: {presets})."
    elif (chosen := cls.default_preset(first["family"], episodes)) is None:
        start, which = cls.Config(), f"Options of {algo_name} start from its config's defaults (its presets: {presets})."
    else:
        start, which = (
            cls.presets[chosen[0]],
            f"Options of {algo_name} start from preset {chosen[0]!r}, its default for this setting ({chosen[1]}); "
            f"--preset NAME picks another of: {presets}.",
        )
    if first["choice"].config is not None:
        start = config_from_file(algo_name, start, first["choice"].config)
        which += f" The options in {first['choice'].config} apply over it."
    return start, which


def config_from_file(algo_name: str, start: Any, path: str) -> Any:
    """`start` with the fields of the algorithm config in `path` (metarl tune's best_config.json,
    or a run's config.json): unknown fields are an error."""
    from metarl import algos
    from metarl.run.folder import _tuples
    from metarl.tune import read_best_config

    fields = read_best_config(path, algo_name)
    valid = {f.name for f in dataclasses.fields(algos.algorithm_class(algo_name).Config)}
    unknown = sorted(set(fields) - valid)
    if unknown:
        raise ConfigError(f"{path}: {algo_name} has no option {', '.join(map(repr, unknown))}", "config")
    return dataclasses.replace(start, **_tuples(fields))


@command(
    "train",
    "Train an algorithm on a task family; write a run folder (metrics, checkpoints, evaluations).",
    usage="metarl train ALGO FAMILY [family options] [algorithm options] --steps N --out DIR [--seeds S] [--episodes N] [--resume] [--eval-every N] [--eval-tasks T]",
    example="metarl train rl2 bandit --arms 5 --episodes 10 --steps 600000 --seeds 1 --out runs/b5",
)
def train_command(args: list[str]) -> int:
    from metarl import algos, envs
    from metarl.run import TrainSettings, train

    if _wants_help(args):
        description = _describe(
            "train",
            _TRAIN_TEXT,
            f"ALGO is one of: {', '.join(algos.names()) or '(none yet)'}. FAMILY is one of: {', '.join(envs.names())}.",
        )
        parse([("run", TrainSettings, None), ("trial", TrialOptions, None)], ["--help"], prog="metarl train ALGO FAMILY", description=description)
        return 0
    (algo_name, family), rest = take_names(args, ["ALGO", "FAMILY"], [algos.algorithm_class, envs.family_class])
    cls = algos.algorithm_class(algo_name)
    start, which = _starting_point(algo_name, family, rest)
    description = _describe("train", _TRAIN_TEXT, which)
    parsed = parse(
        [
            ("family", envs.family_class(family), None),
            ("run", TrainSettings, None),
            ("trial" if cls.in_context else "preset", TrialOptions if cls.in_context else PresetOption, None),
            ("algorithm", cls.Config, start),
        ],
        rest,
        prog=f"metarl train {algo_name} {family}",
        description=description,
    )
    env, config = parsed["family"], parsed["algorithm"]
    algo = cls(env=env, episodes=trial_episodes(env, parsed["trial"].episodes), config=config) if cls.in_context else cls(env=env, config=config)
    settings = dataclasses.replace(parsed["run"], command=("metarl", "train", *args))
    try:
        result = train(algo, settings)
    except KeyboardInterrupt:
        print(f"{PROG}: stopped; the last checkpoint in {settings.out_dir} is intact (continue with --resume)", file=sys.stderr)
        return 130
    if not settings.quiet:
        import glob
        import json
        import os

        evals = sorted(glob.glob(os.path.join(settings.out_dir, "eval", "steps_*.json")))
        if evals and not result.interrupted:
            with open(evals[-1]) as f:
                _print_summary(json.load(f))
        speed = result.updates * algo.steps_per_update * settings.seeds / max(result.train_seconds, 1e-9)
        print(
            f"{settings.out_dir}: {result.env_steps:,} env steps per seed, {result.updates:,} updates; compile "
            f"{result.compile_seconds:.1f} s, training {result.train_seconds:.1f} s ({speed:,.0f} steps/s over all seeds)"
            + ("; stopped early, continue with --resume" if result.interrupted else ""),
            file=sys.stderr,
        )
    return 130 if result.interrupted else 0


_TUNE_TEXT = (
    "Search an algorithm's hyperparameters on a task family with Optuna (TPE), environment steps as the "
    "budget and a Hyperband pruner: every trial trains --seeds seeds for up to --budget env steps, scored "
    "(the mean greedy return on --eval-tasks tasks) every --min-budget steps. The study lives in --storage "
    "(default sqlite:///OUT/study.db; any database URL), so --workers processes here, and the same command "
    "on other machines, share it; rerunning continues it. OUT gets best_config.json (pass it back with "
    "`metarl train ALGO FAMILY --config OUT/best_config.json`), trials.json/.md and Optuna's plots as PNG. "
    "Family and algorithm options set what is not searched."
)


@command(
    "tune",
    "Search hyperparameters with Optuna (Hyperband over env steps; shared, resumable storage).",
    usage="metarl tune ALGO FAMILY [family options] [algorithm options] --out DIR [--trials N] [--budget STEPS] [--min-budget STEPS] [--workers W] [--storage URL]",
    example="metarl tune dqn cartpole --factors length --trials 20 --budget 200000 --min-budget 50000 --workers 2 --out runs/tune-dqn",
)
def tune_command(args: list[str]) -> int:
    from metarl import algos, envs
    from metarl.tune import SPACES, TuneSettings, check_space, tune

    if _wants_help(args):
        description = _describe("tune", _TUNE_TEXT, f"ALGO is one of: {', '.join(SPACES)}. FAMILY is one of: {', '.join(envs.names())}.")
        parse([("tune", TuneSettings, None), ("preset", PresetOption, None)], ["--help"], prog="metarl tune ALGO FAMILY", description=description)
        return 0
    (algo_name, family), rest = take_names(args, ["ALGO", "FAMILY"], [algos.algorithm_class, envs.family_class])
    check_space(algo_name)
    cls = algos.algorithm_class(algo_name)
    start, which = _starting_point(algo_name, family, rest)
    parsed = parse(
        [("family", envs.family_class(family), None), ("tune", TuneSettings, None), ("preset", PresetOption, None), ("algorithm", cls.Config, start)],
        rest,
        prog=f"metarl tune {algo_name} {family}",
        description=_describe("tune", _TUNE_TEXT, which),
    )
    env, settings = parsed["family"], parsed["tune"]
    cls(env=env, config=parsed["algorithm"])  # the fixed part of the config must build on this family
    family_options = {f.name: getattr(env, f.name) for f in dataclasses.fields(env) if f.init}
    summary = tune(algo_name, family, family_options, parsed["algorithm"], settings, log=lambda line: print(f"{PROG}: {line}", file=sys.stderr))
    best = summary.get("best")
    print(f"{summary['complete']} complete and {summary['pruned']} pruned trials in {summary['storage']} (study {summary['study']})")
    if best:
        print(f"best: trial {best['number']}, score {best['value']:.2f}, {best['params']}")
        print(f"train with it: metarl train {algo_name} {family} --config {settings.out_dir}/best_config.json ...")
    return 0


_EVAL_TEXT = (
    "Evaluate a saved run: rebuild its algorithm from RUN/config.json, load its last checkpoint (the newest "
    "that verifies) and score every training seed's agent on T held-out tasks, beside the family's "
    "baselines on the same tasks (all that apply, or --baselines). Prints the table (mean total return with "
    "a 95% interval over per-seed means, or over tasks with one seed; regret against the Oracle when there "
    "is one) and writes it as JSON and Markdown and the per-episode return curves as PNG (default "
    "RUN/eval/final.*)."
)


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """What to evaluate and where to write it."""

    tasks: int = 1000  #: held-out tasks, every agent on the same ones
    seed: int | None = None  #: tasks are sample_tasks(PRNGKey(seed)) (None: the run's evaluation seed)
    baselines: Annotated[tuple[str, ...] | None, _NAMES] = None  #: comma-separated baselines ("all": every one that applies; "none")
    checkpoint: str | None = None  #: a checkpoint file to evaluate (None: the run's last that verifies)
    json: str | None = None  #: summary JSON path (default RUN/eval/final.json)
    markdown: str | None = None  #: Markdown table path (default: the JSON path with .md)
    plot: str | None = None  #: PNG plot path (default RUN/eval/final.png)
    split: str | None = None  #: a family with task-id splits (distraction, cooking): score on "test" (ids training never saw), "train" or "all" (None: the run's own; default paths RUN/eval/final_SPLIT.*)
    contexts: str | None = None  #: a factor of the run's contextual family ("first": its first): score on its evaluation contexts instead (default paths RUN/eval/contexts_FACTOR.*)
    num_contexts: int = 40  #: with --contexts: the evaluation contexts, linspace(LOW / 2, HIGH x 2)
    episodes: int = 10  #: with --contexts: greedy episodes per context


@command(
    "eval",
    "Evaluate a saved run's agents against the family's baselines; write the table and plot.",
    usage="metarl eval RUN [--tasks T] [--seed S] [--baselines A,B] [--json PATH] [--plot PATH]",
    example="metarl eval runs/b5 --tasks 1000 --json runs/b5/eval/final.json --plot runs/b5/eval/final.png",
)
def eval_command(args: list[str]) -> int:
    from metarl.run import evaluate_run

    description = _describe("eval", _EVAL_TEXT)
    if _wants_help(args):
        parse([("options", EvalOptions, None)], ["--help"], prog="metarl eval RUN", description=description)
        return 0
    if args[0].startswith("-"):
        raise ConfigError("missing RUN, the run folder to evaluate (see --help)")
    run_dir, rest = args[0], args[1:]
    o = parse([("options", EvalOptions, None)], rest, prog="metarl eval RUN", description=description)["options"]
    status = _console(stderr=True)
    if o.contexts is not None:
        from metarl.run.evaluation import evaluate_run_contexts

        with status.status(f"evaluating {run_dir} on its evaluation contexts ..."):
            summary = evaluate_run_contexts(run_dir, None if o.contexts == "first" else o.contexts, o.num_contexts, o.episodes,
                                            o.seed or 0, o.json, o.markdown, o.plot, o.checkpoint,
                                            log=lambda line: print(f"{PROG}: {line}", file=sys.stderr))
        with open(summary["paths"]["markdown"]) as f:
            print(f.read().rstrip())
        return 0
    with status.status(f"evaluating {run_dir} ..."):
        summary = evaluate_run(
            run_dir,
            tasks=o.tasks,
            seed=o.seed,
            baselines=None if o.baselines is None else list(o.baselines),
            json_path=o.json,
            md_path=o.markdown,
            plot_path=o.plot,
            checkpoint=o.checkpoint,
            log=lambda line: print(f"{PROG}: {line}", file=sys.stderr),
            split=o.split,
        )
    _print_summary(summary)
    return 0


# ---------------------------------------------------------------------------------------------
# metarl, metarl --help
def _top_help() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"usage: {PROG} [--host-devices N] COMMAND [options]   ({PROG} COMMAND --help for each command's options)", "", OVERVIEW, "",
             "--host-devices N: split the CPU into N JAX devices (before JAX starts), for data-parallel configs", "such as "
             "`metarl --host-devices 2 train rl2 bandit ... --devices 2`.", "", "commands:"]
    lines += [f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS.values()]
    lines += ["", "examples:"] + [f"  {c.example}" for c in COMMANDS.values()]
    return "\n".join(lines)


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache in ~/.cache/metarl/jax (or $METARL_CACHE_DIR; "off"
    disables it): a second run of the same command skips most of its XLA compilation."""
    import os

    path = os.environ.get("METARL_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "metarl", "jax"))
    if path.strip().lower() == "off":
        return
    import jax

    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return  # an unwritable home: run without the cache
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _global_options(args: list[str]) -> list[str]:
    """Apply the options that come before COMMAND and must act before JAX starts (`--host-devices
    N`: split the CPU into N JAX devices, for data-parallel configs such as rl2's --devices N);
    returns the rest."""
    from metarl.devices import use_host_devices

    while args and (args[0] == "--host-devices" or args[0].startswith("--host-devices=")):
        value = args[0].split("=", 1)[1] if "=" in args[0] else (args[1] if len(args) > 1 else "")
        args = args[1:] if "=" in args[0] else args[2:]
        if not value.strip().isdigit() or int(value) < 1:
            raise ConfigError(f"--host-devices must be a positive integer, got {value!r}")
        use_host_devices(int(value))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on `argv` (default: `sys.argv[1:]`, with JAX's persistent compilation
    cache on); returns the exit code."""
    if argv is None:
        enable_compilation_cache()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _global_options(args)
    except MetarlError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.exit_code
    if _wants_help(args):
        print(_top_help())
        return 0
    if args[0] == "--version":
        from metarl import __version__

        print(f"{PROG} {__version__}")
        return 0
    try:
        if args[0] not in COMMANDS:
            raise ConfigError(f"unknown command {args[0]!r}; valid commands: {', '.join(COMMANDS)}")
        return COMMANDS[args[0]].run(args[1:])
    except MetarlError as error:  # ConfigError, CheckpointError, TrainingDiverged, ...: one clear line, no traceback
        message = _flag_message(error) if isinstance(error, ConfigError) else str(error)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return error.exit_code
    except SystemExit as exit_:  # tyro's --help (0) and malformed flags (2, after its own message)
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)


if __name__ == "__main__":
    sys.exit(main())
