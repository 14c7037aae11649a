#!/usr/bin/env python3
"""Cohort's ASHA searcher (TPE and random sampling) against Optuna's HyperbandPruner (TPE and
random samplers), on multi-fidelity benchmark functions, at equal training budget.

bench/compare-optuna.sh runs this inside a virtual environment that has Optuna. For each
experiment file (default: examples/search/{hartmann,hartmann3,branin}-tpe.toml, one per
benchmark function) and each number of trials (default 128, 256 and 512), four searches:

  Cohort TPE      `cohort search simulate FILE --max-trials N --workers 16 --repeat R --json`:
                  the file's ASHA (max_length 256, divisor 4, 4 rungs, aggressive: one bracket
                  with rungs at lengths 4, 16, 64, 256) with its TPE sampler, seeds 1..R. Its
                  mean budget (units of training) over the R runs is the budget B every other
                  searcher of the case gets.
  Cohort random   the same ASHA with `--sampler random`, given as many trials as spend B (the
                  count scaled until its mean budget is within 3% of B: ASHA's budget grows
                  with its trials).
  Optuna TPE      one study per seed (1..REPEAT), TPESampler(seed) with HyperbandPruner
                  (min_resource=4, max_resource=256, reduction_factor=4), trials one after
                  another until the study has spent exactly B.
  Optuna random   the same with RandomSampler(seed).

The functions are re-implemented below as Cohort defines them (search/src/functions.rs,
docs/search.md "The simulation benchmark"); only the noise draws differ (same distribution,
other random numbers). Regret, on every side: the exact value of the best trial that reached full
length (256), minus the function's global minimum. Printed per case: mean regret with its
standard error, and the ratios Cohort TPE / each other searcher (<= 1: Cohort TPE at least as
good); then one line per case saying whether Cohort TPE is within one standard error of Optuna
TPE + Hyperband (mean difference <= the standard error of the difference) and below Cohort's
random-sampling ASHA.

Choices made on the Optuna side, and why:

  min_resource=4   Cohort's first rung is at 256 / 4^3 = 4. With min_resource=4 Optuna's most
                   aggressive bracket has exactly Cohort's rungs (4, 16, 64, 256), and Hyperband
                   adds its usual hedging brackets starting at 16, 64 and 256 (4 brackets in
                   all). min_resource=1 would add a rung at length 1, a fidelity Cohort never
                   uses, and a fifth bracket.
  reports          a trial reports its value at the rung lengths 4, 16 and 64 only, and returns
                   its value at 256. Optuna's successive halving decides a rung at the first
                   report at or past the rung's step, with the value reported there, so reporting
                   at every step 1..256 gives the same decisions (and TPE ranks a pruned trial by
                   that same last report) at 64 times the storage writes. At 256 the trial has
                   reached full length and is not asked to prune: it is complete either way.
  budget           a trial costs the last step it reached (the function is evaluated at a step
                   without the steps before it, like a checkpoint that is trained further). When
                   the next stretch would pass the budget, the trial trains only up to the budget,
                   ends there (pruned) and the study stops; each study spends exactly the budget.
  sequential       Optuna runs its trials one at a time (n_jobs=1) and so always decides with
                   every earlier result in hand; Cohort runs 16 at a time, as simulated. This
                   favours Optuna, if anything.
  study names      HyperbandPruner picks a trial's bracket from a hash of the study name and the
                   trial number; a seed's TPE and Random studies share a name, so the same trial
                   numbers land in the same brackets.

Options (bench/compare-optuna.sh maps environment settings onto them):
  --self-check     checks the functions' implementation (no cohort binary, no Optuna needed)
  --experiment F   one experiment file instead of the three (repeatable)
  --trials 128,..  the numbers of trials
  --pruner asha    also runs Optuna's SuccessiveHalvingPruner(min_resource=4,
                   reduction_factor=4), the single-bracket counterpart of Cohort's aggressive
                   mode, next to HyperbandPruner (repeatable: --pruner hyperband --pruner asha)
"""

import argparse
import hashlib
import json
import math
import random
import statistics
import struct
import subprocess
import sys
import time
import tomllib

# --- The multi-fidelity benchmark functions ---------------------------------------------------
#
# Each function is given points in [0, 1]^d and has a known global minimum. The fidelity z in
# [Z_MIN, Z_MAX] (a trial's training length) is scaled on a log scale to
#
#     s = (ln z - ln Z_MIN) / (ln Z_MAX - ln Z_MIN)            in [0, 1]
#
# and the value at fidelity z is the function with the fidelity shift k = bias * (1 - s), plus
# noise that only ever makes a point look worse:
#
#     f(x, z) = F_k(x) + |N(0, 1)| * noise * (1 - s)
#
# At z = Z_MAX, s = 1, k = 0 and f is exactly F (the same point at the same fidelity always gets
# the same noise draw). Defaults, as Cohort's: bias 0.5, noise 0.1, Z_MIN 1, Z_MAX 256.
#
# Hartmann 6-D and 3-D (Dixon and Szego, 1978), as mf-prior-bench's MFHartmann6 and MFHartmann3:
#
#     F_k(x) = - sum_{i=1..4} (alpha_i - k) * exp( - sum_j A_ij * (x_j - P_ij)^2 )
#
# Branin (Branin, 1972) on [-5, 10] x [0, 15], as Kandasamy et al.'s (2017, BOCA) multi-fidelity
# Branin with its three fidelities made one (m = 2k, so bias 0.5 gives their shifts at s = 0):
#
#     F_k(x) = (x2 - b x1^2 + c x1 - 6)^2 + 10 (1 - t) cos(x1) + 10,
#     b = 5.1 / (4 pi^2) - 0.01 m,   c = 5 / pi - 0.1 m,   t = 1 / (8 pi) + 0.05 m

ALPHA = (1.0, 1.2, 3.0, 3.2)
H6_A = (
    (10.0, 3.0, 17.0, 3.5, 1.7, 8.0),
    (0.05, 10.0, 17.0, 0.1, 8.0, 14.0),
    (3.0, 3.5, 1.7, 10.0, 17.0, 8.0),
    (17.0, 8.0, 0.05, 10.0, 0.1, 14.0),
)
H6_P = (
    (0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886),
    (0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991),
    (0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650),
    (0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381),
)
H3_A = ((3.0, 10.0, 30.0), (0.1, 10.0, 35.0), (3.0, 10.0, 30.0), (0.1, 10.0, 35.0))
H3_P = (
    (0.3689, 0.1170, 0.2673),
    (0.4699, 0.4387, 0.7470),
    (0.1091, 0.8732, 0.5547),
    (0.0381, 0.5743, 0.8828),
)


def hartmann(a_rows, p_rows, x, k):
    h = 0.0
    for alpha, a, p in zip(ALPHA, a_rows, p_rows):
        inner = sum(a_j * (x_j - p_j) ** 2 for a_j, x_j, p_j in zip(a, x, p))
        h -= (alpha - k) * math.exp(-inner)
    return h


def branin(x, k):
    x1, x2 = x[0] * 15.0 - 5.0, x[1] * 15.0
    m = 2.0 * k
    b = 5.1 / (4.0 * math.pi ** 2) - 0.01 * m
    c = 5.0 / math.pi - 0.1 * m
    t = 1.0 / (8.0 * math.pi) + 0.05 * m
    return (x2 - b * x1 * x1 + c * x1 - 6.0) ** 2 + 10.0 * (1.0 - t) * math.cos(x1) + 10.0


class Function:
    def __init__(self, name, title, dims, global_min, optimum, biased):
        self.name, self.title, self.dims = name, title, dims
        self.global_min, self.optimum, self.biased = global_min, optimum, biased

    def exact(self, x):
        return self.biased(x, 0.0)


FUNCTIONS = {
    f.name: f
    for f in (
        Function("hartmann6", "Hartmann 6-D", 6, -3.322368011391339,
                 (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573),
                 lambda x, k: hartmann(H6_A, H6_P, x, k)),
        Function("hartmann3", "Hartmann 3-D", 3, -3.862782147820756,
                 (0.114614, 0.555649, 0.852547),
                 lambda x, k: hartmann(H3_A, H3_P, x, k)),
        Function("branin", "Branin", 2, 5.0 / (4.0 * math.pi),
                 ((math.pi + 5.0) / 15.0, 2.275 / 15.0), branin),
    )
}
Z_MIN = 1
Z_MAX = 256


def scaled(z, z_min=Z_MIN, z_max=Z_MAX):
    """Fidelity z scaled to s in [0, 1] on a log scale (z clamped to [z_min, z_max])."""
    if z_max <= z_min:
        return 1.0
    z = min(max(z, z_min), z_max)
    s = (math.log(z) - math.log(z_min)) / (math.log(z_max) - math.log(z_min))
    return min(max(s, 0.0), 1.0)


def half_normal(seed, z, x):
    """|N(0, 1)|, the same for the same seed, fidelity and point: a Box-Muller draw from a
    generator seeded with a hash of (seed, z, x)."""
    key = hashlib.blake2b(struct.pack(f"<Qd{len(x)}d", seed, float(z), *x),
                          digest_size=8).digest()
    rng = random.Random(int.from_bytes(key, "little"))
    u1 = 1.0 - rng.random()  # in (0, 1]
    u2 = rng.random()
    return abs(math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2))


def multi_fidelity(function, x, z, bias=0.5, noise=0.1, seed=1):
    """The function at point x (coordinates in [0, 1]) and fidelity z; exact at z = Z_MAX."""
    s = scaled(z)
    h = function.biased(x, bias * (1.0 - s))
    if s >= 1.0 or noise == 0.0:
        return h
    return h + half_normal(seed, z, x) * noise * (1.0 - s)


def self_check():
    """Checks the implementation against known values and its defining properties (the same
    values search/src/functions.rs's tests check on Cohort's side)."""
    checks = []

    def check(name, ok, detail):
        checks.append(ok)
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}")

    h6, h3, br = FUNCTIONS["hartmann6"], FUNCTIONS["hartmann3"], FUNCTIONS["branin"]
    rng = random.Random(7)
    for f in FUNCTIONS.values():
        at_opt = f.exact(f.optimum)
        check(f"{f.name}: exact minimum", abs(at_opt - f.global_min) < 1e-4,
              f"F(optimum) = {at_opt:.6f}, known {f.global_min:.6f}")
        lowest = min(f.exact([rng.random() for _ in range(f.dims)]) for _ in range(20000))
        check(f"{f.name}: no random point below the minimum", lowest > f.global_min,
              f"lowest of 20000 random points {lowest:.4f}")
        check(f"{f.name}: full length is exact",
              multi_fidelity(f, f.optimum, Z_MAX) == at_opt, "f(opt, 256) = F(opt)")
        low = multi_fidelity(f, f.optimum, 4)
        check(f"{f.name}: low fidelity is shifted, noise repeatable and only adds",
              low == multi_fidelity(f, f.optimum, 4)
              and low >= multi_fidelity(f, f.optimum, 4, noise=0.0)
              and low != multi_fidelity(f, f.optimum, 4, seed=2)
              and multi_fidelity(f, f.optimum, 1, noise=0.0) != at_opt,
              f"f(opt, 4) = {low:.6f}")
    centre = h6.exact((0.5,) * 6)
    check("hartmann6: centre of the cube", abs(centre - (-0.505315)) < 1e-5,
          f"H(0.5, ..., 0.5) = {centre:.6f}, known -0.505315")
    # Hartmann 6-D's second local minimum, about -3.2032, lies next to the fourth centre P_4.
    near_local = h6.exact(H6_P[3])
    check("hartmann6: near the local minimum", -3.2032 - 1e-3 < near_local < -3.2032 + 0.01,
          f"H(P_4) = {near_local:.6f}, local minimum nearby -3.2032")
    flat = multi_fidelity(h6, h6.optimum, Z_MIN, noise=0.0)
    check("hartmann6: length 1 lowers every alpha by the bias",
          abs(flat - hartmann(H6_A, H6_P, h6.optimum, 0.5)) < 1e-12
          and flat > h6.global_min + 0.5, f"f(opt, 1, noise 0) = {flat:.6f}")
    centre3 = h3.exact((0.5,) * 3)
    check("hartmann3: centre of the cube", abs(centre3 - (-0.6282)) < 1e-3,
          f"H(0.5, 0.5, 0.5) = {centre3:.6f}, known -0.62802")

    def at(x1, x2):
        return br.exact(((x1 + 5.0) / 15.0, x2 / 15.0))

    others = (at(-math.pi, 12.275), at(9.42478, 2.475))
    check("branin: its other two minima", all(abs(v - 0.397887) < 1e-5 for v in others),
          f"F(-pi, 12.275) = {others[0]:.6f}, F(9.42478, 2.475) = {others[1]:.6f}")
    origin = at(0.0, 0.0)
    t = 1.0 / (8.0 * math.pi)
    check("branin: the origin", abs(origin - (36.0 + 10.0 * (1.0 - t) + 10.0)) < 1e-9,
          f"F(0, 0) = {origin:.6f}")
    check("log scale", abs(scaled(16) - 0.5) < 1e-12 and scaled(1) == 0.0 and scaled(256) == 1.0,
          "s(1) = 0, s(16) = 0.5, s(256) = 1")
    draws = [half_normal(1, 4, [rng.random() for _ in range(6)]) for _ in range(20000)]
    m = statistics.fmean(draws)
    check("noise is |N(0,1)|", abs(m - math.sqrt(2 / math.pi)) < 0.02,
          f"mean draw {m:.4f}, expected {math.sqrt(2 / math.pi):.4f}")
    if not all(checks):
        sys.exit("compare_optuna: self-check failed")
    print("self-check passed")


# --- Experiment files -------------------------------------------------------------------------


def read_experiment(path, args):
    """(function, bias, noise) of an experiment file's [simulation] table (the command line's
    --bias and --noise first), after checking that its hyperparameters are the function's
    coordinates: as many doubles over [0, 1] as it has dimensions."""
    with open(path, "rb") as f:
        spec = tomllib.load(f)
    sim = spec.get("simulation", {})
    function = FUNCTIONS[sim.get("function", "hartmann6")]
    hparams = spec.get("hyperparameters", {})
    doubles = [h for h in hparams.values()
               if h.get("type") == "double" and h.get("minval") == 0 and h.get("maxval") == 1]
    if len(doubles) != len(hparams) or len(hparams) != function.dims:
        sys.exit(f"{path}: the comparison needs {function.dims} hyperparameters, each a double "
                 f"from 0.0 to 1.0, for {function.title}")
    searcher = spec.get("searcher", {})
    if (searcher.get("name"), searcher.get("max_length"), searcher.get("divisor"),
            searcher.get("max_rungs")) != ("asha", Z_MAX, 4, 4):
        sys.exit(f"{path}: the comparison needs an asha searcher with max_length {Z_MAX}, "
                 "divisor 4 and 4 rungs (Optuna's pruner is set up for those rungs)")
    bias = args.bias if args.bias is not None else sim.get("bias", 0.5)
    noise = args.noise if args.noise is not None else sim.get("noise", 0.1)
    return function, bias, noise


# --- Cohort -------------------------------------------------------------------------------------


def run_cohort(args, experiment, trials, sampler, bias, noise):
    """Runs the simulation; returns (per-run results, wall seconds)."""
    cmd = [args.cohort, "search", "simulate", experiment, "--workers", str(args.workers),
           "--repeat", str(args.cohort_repeat), "--bias", str(bias), "--noise", str(noise),
           "--max-trials", str(trials), "--sampler", sampler, "--json"]
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - start
    runs = json.loads(out)
    for r in runs:
        # A run where no trial reached full length has infinite regret (JSON null).
        if r["regret"] is None:
            r["regret"] = math.inf
    return runs, wall


# --- Optuna -------------------------------------------------------------------------------------

RUNGS = (4, 16, 64)  # Cohort's rungs below full length: 256 / 4^3, 256 / 4^2, 256 / 4


def make_pruner(optuna, name):
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=4, max_resource=Z_MAX,
                                              reduction_factor=4)
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=4, reduction_factor=4)


def make_sampler(optuna, name, seed):
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def run_optuna(optuna, function, bias, noise, sampler_name, pruner_name, seed, budget):
    """One study; returns (final regret, budget spent, trials)."""
    spent = 0
    best = math.inf

    def objective(trial):
        nonlocal spent, best
        x = [trial.suggest_float(f"x{j}", 0.0, 1.0) for j in range(1, function.dims + 1)]
        reached = 0
        for step in RUNGS + (Z_MAX,):
            if spent + step - reached > budget:
                # The budget ends inside this stretch: train up to it, and end the study.
                spent = budget
                trial.study.stop()
                raise optuna.TrialPruned()
            spent += step - reached
            reached = step
            value = multi_fidelity(function, x, step, bias, noise, seed)
            if spent >= budget:
                trial.study.stop()
            if step == Z_MAX:
                best = min(best, value)  # exact at full length
                return value
            trial.report(value, step)
            if spent >= budget or trial.should_prune():
                raise optuna.TrialPruned()
        raise AssertionError("unreachable")

    study = optuna.create_study(
        study_name=f"{function.name}-seed{seed}",
        direction="minimize",
        sampler=make_sampler(optuna, sampler_name, seed),
        pruner=make_pruner(optuna, pruner_name),
    )
    study.optimize(objective, n_jobs=1)
    return best - function.global_min, spent, len(study.trials)


# --- Report -------------------------------------------------------------------------------------


def summary(regrets):
    """(mean, standard error of the mean, median, runs with no trial at full length)."""
    finite = [r for r in regrets if math.isfinite(r)]
    failed = len(regrets) - len(finite)
    mean = statistics.fmean(regrets) if not failed else math.inf
    sem = statistics.stdev(finite) / math.sqrt(len(finite)) if len(finite) > 1 else math.nan
    return mean, sem, statistics.median(regrets), failed


def run_case(optuna, args, experiment, trials, pruners):
    """One experiment file at one number of trials: prints its table; returns its verdict."""
    function, bias, noise = read_experiment(experiment, args)
    tpe_runs, tpe_wall = run_cohort(args, experiment, trials, "tpe", bias, noise)
    budgets = [r["budget"] for r in tpe_runs]
    budget = round(statistics.fmean(budgets))
    # Random-sampling ASHA with as many trials as spend the same budget: its budget grows
    # with its trials, so the count is scaled until the mean budget is within 3% of B.
    random_trials = trials
    random_runs, random_wall = run_cohort(args, experiment, random_trials, "random", bias, noise)
    for _ in range(4):
        spent = statistics.fmean(r["budget"] for r in random_runs)
        if abs(spent - budget) <= 0.03 * budget:
            break
        random_trials = max(1, round(random_trials * budget / spent))
        random_runs, random_wall = run_cohort(args, experiment, random_trials, "random", bias,
                                              noise)

    print(f"== {function.title} ({experiment}), {trials} trials: bias {bias}, noise {noise}; "
          f"equal budget {budget} units (Cohort TPE's mean over {len(tpe_runs)} seeds, "
          f"{min(budgets)}..{max(budgets)})")
    header = f"{'searcher':<38} {'seeds':>5} {'mean regret':>19} {'median':>9} " \
             f"{'budget':>7} {'trials':>7} {'wall s':>8}"
    print(header)
    print("-" * len(header))

    def row(name, stats, n, spent, ntrials, wall):
        mean, sem, median, failed = stats
        note = f"  ({failed} runs with nothing at full length)" if failed else ""
        print(f"{name:<38} {n:>5} {mean:>9.5f} ± {sem:<7.5f} {median:>9.5f} "
              f"{spent:>7.0f} {ntrials:>7.1f} {wall:>8.2f}{note}")

    cohort = summary([r["regret"] for r in tpe_runs])
    row(f"Cohort ASHA, TPE ({args.workers} workers)", cohort, len(tpe_runs),
        statistics.fmean(budgets), statistics.fmean(r["trials"] for r in tpe_runs), tpe_wall)
    results = [("Cohort ASHA, random sampling", summary([r["regret"] for r in random_runs]))]
    row(results[0][0], results[0][1], len(random_runs),
        statistics.fmean(r["budget"] for r in random_runs),
        statistics.fmean(r["trials"] for r in random_runs), random_wall)
    repeats = {"tpe": args.repeat, "random": args.random_repeat or args.repeat}
    for pruner in pruners:
        for sampler in ("tpe", "random"):
            start = time.perf_counter()
            runs = [run_optuna(optuna, function, bias, noise, sampler, pruner, seed, budget)
                    for seed in range(1, repeats[sampler] + 1)]
            wall = time.perf_counter() - start
            name = f"Optuna {'TPE' if sampler == 'tpe' else 'Random'} + " \
                   f"{'Hyperband' if pruner == 'hyperband' else 'SuccessiveHalving'}"
            stats = summary([r[0] for r in runs])
            row(name, stats, len(runs), statistics.fmean(r[1] for r in runs),
                statistics.fmean(r[2] for r in runs), wall)
            results.append((name, stats))
    for name, stats in results:
        ratio = cohort[0] / stats[0] if stats[0] > 0 else math.inf
        print(f"  ratio Cohort TPE / {name}: {ratio:.3f}")
    print()
    optuna_tpe = dict(results)["Optuna TPE + Hyperband"] if "hyperband" in pruners else None
    random_asha = results[0][1]
    verdict = {"case": f"{function.title}, {trials} trials", "budget": budget,
               "cohort": cohort, "random": random_asha, "optuna": optuna_tpe}
    return verdict


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--cohort", help="the cohort binary")
    ap.add_argument("--experiment", action="append",
                    help="experiment files (default: the three benchmark functions' *-tpe.toml)")
    ap.add_argument("--trials", default="128,256,512", help="numbers of trials, comma-separated")
    ap.add_argument("--workers", type=int, default=16, help="Cohort's parallel workers")
    ap.add_argument("--repeat", type=int, default=100, help="Optuna studies per sampler (seeds)")
    ap.add_argument("--random-repeat", type=int, default=0,
                    help="Optuna random-sampler studies, when fewer than --repeat")
    ap.add_argument("--cohort-repeat", type=int, default=100, help="Cohort runs (seeds)")
    ap.add_argument("--bias", type=float, help="instead of each file's [simulation] bias")
    ap.add_argument("--noise", type=float, help="instead of each file's [simulation] noise")
    ap.add_argument("--pruner", action="append", choices=("hyperband", "asha"),
                    help="Optuna pruners to run (default: hyperband)")
    ap.add_argument("--self-check", action="store_true")
    args = ap.parse_args()

    if args.self_check:
        self_check()
        return
    if not args.cohort:
        ap.error("--cohort is required")
    if args.repeat < 1 or args.cohort_repeat < 1 or args.random_repeat < 0:
        ap.error("--repeat and --cohort-repeat must be at least 1")
    try:
        trial_counts = [int(t) for t in args.trials.split(",")]
    except ValueError:
        ap.error(f"--trials {args.trials!r}: give numbers separated by commas")
    if any(t < 1 for t in trial_counts):
        ap.error("--trials: each number must be at least 1")
    experiments = args.experiment or [f"examples/search/{name}-tpe.toml"
                                      for name in ("hartmann", "hartmann3", "branin")]
    pruners = args.pruner or ["hyperband"]

    import optuna
    from importlib import metadata

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"Optuna {metadata.version('optuna')}: {args.repeat} seeds for TPE, "
          f"{args.random_repeat or args.repeat} for random, trials one at a time; Cohort: "
          f"{args.cohort_repeat} seeds, {args.workers} trials at once")
    print("(mean regret ± standard error of the mean; budget and trials are means per run;")
    print(" wall s is the whole side: Cohort's command, or all of a sampler's studies)")
    print()
    verdicts = [run_case(optuna, args, e, t, pruners) for e in experiments for t in trial_counts]
    print("Cohort ASHA with the TPE sampler, case by case:")
    for v in verdicts:
        mean, sem = v["cohort"][0], v["cohort"][1]
        words = []
        if v["optuna"] is not None:
            o_mean, o_sem = v["optuna"][0], v["optuna"][1]
            se = math.sqrt(sem ** 2 + o_sem ** 2)
            within = mean - o_mean <= se
            words.append(f"{'within' if within else 'NOT within'} one s.e. of Optuna TPE + "
                         f"Hyperband ({mean:.5f} vs {o_mean:.5f}, s.e. of the difference "
                         f"{se:.5f})")
        r_mean = v["random"][0]
        words.append(f"{'below' if mean < r_mean else 'NOT below'} random-sampling ASHA "
                     f"({r_mean:.5f})")
        print(f"  {v['case']:<28} budget {v['budget']:>6}: " + "; ".join(words))


if __name__ == "__main__":
    main()
