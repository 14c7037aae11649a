#!/usr/bin/env python3
"""Cohort's ASHA searcher against Optuna's HyperbandPruner, on the multi-fidelity Hartmann 6-D
function, at equal training budget.

bench/compare-optuna.sh runs this inside a virtual environment that has Optuna. The two sides:

  Cohort   `cohort search simulate FILE --workers 16 --repeat N --json` on
           examples/search/hartmann.toml (ASHA, 256 trials, max_length 256, divisor 4, 4 rungs,
           aggressive: one bracket with rungs at lengths 4, 16, 64, 256), seeds 1..N. Its mean
           budget (units of training) over the N runs is the budget both Optuna studies get.
  Optuna   one study per seed and sampler (TPE and Random, both seeded), minimizing the same
           function with HyperbandPruner(min_resource=4, max_resource=256, reduction_factor=4);
           trials run one after another until the study has spent exactly that budget.

The function is re-implemented below (mf_hartmann6) as Cohort defines it (search/src/hartmann.rs,
docs/search.md "The simulation benchmark"); only the noise draws differ (same distribution, other
random numbers). Regret, on both sides: the exact Hartmann 6-D value of the best trial that
reached full length (256), minus the global minimum. The ratio Cohort / Optuna of the mean final
regrets is printed for each sampler: <= 1 means Cohort found at least as good a point.

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
  --self-check     checks the function implementation (no cohort binary, no Optuna needed)
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

# --- The multi-fidelity Hartmann 6-D function -------------------------------------------------
#
# Hartmann 6-D (Dixon and Szego, 1978), on [0, 1]^6:
#
#     H(x) = - sum_{i=1..4} alpha_i * exp( - sum_{j=1..6} A_ij * (x_j - P_ij)^2 )
#
# with alpha = (1.0, 1.2, 3.0, 3.2) and A, P below (P already scaled by 1e-4). Its global minimum
# is -3.322368011391339 at (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573).
#
# The multi-fidelity version (as mf-prior-bench's MFHartmann6, and as Cohort simulates it): the
# fidelity z in [Z_MIN, Z_MAX] (a trial's training length) is scaled on a log scale to
#
#     s = (ln z - ln Z_MIN) / (ln Z_MAX - ln Z_MIN)            in [0, 1]
#
# and the value at fidelity z is
#
#     f(x, z) = - sum_i (alpha_i - bias * (1 - s)) * exp(- sum_j A_ij (x_j - P_ij)^2)
#               + |N(0, 1)| * noise * (1 - s)
#
# Below full length the function is flattened (each alpha_i lowered by bias * (1 - s), which
# moves and weakens the optimum) and noisy (the noise only ever makes a point look worse, and
# the same point at the same fidelity always gets the same draw). At z = Z_MAX, s = 1 and f is
# exactly H. Defaults, as Cohort's: bias 0.5, noise 0.1, Z_MIN 1, Z_MAX 256 (max_length).

GLOBAL_MIN = -3.322368011391339
OPTIMUM = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)
ALPHA = (1.0, 1.2, 3.0, 3.2)
A = (
    (10.0, 3.0, 17.0, 3.5, 1.7, 8.0),
    (0.05, 10.0, 17.0, 0.1, 8.0, 14.0),
    (3.0, 3.5, 1.7, 10.0, 17.0, 8.0),
    (17.0, 8.0, 0.05, 10.0, 0.1, 14.0),
)
P = (
    (0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886),
    (0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991),
    (0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650),
    (0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381),
)
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
    key = hashlib.blake2b(struct.pack("<Qd6d", seed, float(z), *x), digest_size=8).digest()
    rng = random.Random(int.from_bytes(key, "little"))
    u1 = 1.0 - rng.random()  # in (0, 1]
    u2 = rng.random()
    return abs(math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2))


def mf_hartmann6(x, z, bias=0.5, noise=0.1, seed=1, z_min=Z_MIN, z_max=Z_MAX):
    """The multi-fidelity Hartmann 6-D function at point x (six coordinates in [0, 1]) and
    fidelity z; exact Hartmann 6-D at z = z_max."""
    s = scaled(z, z_min, z_max)
    h = 0.0
    for alpha, a, p in zip(ALPHA, A, P):
        inner = sum(a_j * (x_j - p_j) ** 2 for a_j, x_j, p_j in zip(a, x, p))
        h -= (alpha - bias * (1.0 - s)) * math.exp(-inner)
    if s >= 1.0 or noise == 0.0:
        return h
    return h + half_normal(seed, z, x) * noise * (1.0 - s)


def exact(x):
    """Hartmann 6-D itself (the highest fidelity)."""
    return mf_hartmann6(x, Z_MAX, bias=0.0, noise=0.0)


def self_check():
    """Checks the implementation against known values and its defining properties."""
    checks = []

    def check(name, ok, detail):
        checks.append(ok)
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}")

    at_opt = exact(OPTIMUM)
    check("exact minimum", abs(at_opt - GLOBAL_MIN) < 1e-4,
          f"H{OPTIMUM} = {at_opt:.6f}, known -3.32237")
    # The value at the centre of the cube, as commonly tabulated for Hartmann 6-D.
    centre = exact((0.5,) * 6)
    check("centre of the cube", abs(centre - (-0.505315)) < 1e-5,
          f"H(0.5, ..., 0.5) = {centre:.6f}, known -0.505315")
    # Hartmann 6-D's second local minimum, about -3.2032, lies next to the fourth centre P_4.
    near_local = exact(P[3])
    check("near the local minimum", -3.2032 - 1e-3 < near_local < -3.2032 + 0.01,
          f"H(P_4) = {near_local:.6f}, local minimum nearby -3.2032")
    corner = exact((0.0,) * 6)
    check("corner", -0.01 < corner < 0.0, f"H(0, ..., 0) = {corner:.6f}")
    rng = random.Random(7)
    lowest = min(exact([rng.random() for _ in range(6)]) for _ in range(20000))
    check("no random point below the minimum", lowest > GLOBAL_MIN,
          f"lowest of 20000 random points {lowest:.4f}")
    check("full length is exact", mf_hartmann6(OPTIMUM, Z_MAX) == at_opt,
          f"f(opt, 256) = {mf_hartmann6(OPTIMUM, Z_MAX):.6f}")
    flat = mf_hartmann6(OPTIMUM, Z_MIN, noise=0.0)
    want = -sum((al - 0.5) * math.exp(-sum(a_j * (x_j - p_j) ** 2
                                          for a_j, x_j, p_j in zip(a, OPTIMUM, p)))
                for al, a, p in zip(ALPHA, A, P))
    check("length 1 is flattened by bias", abs(flat - want) < 1e-12 and flat > GLOBAL_MIN + 0.5,
          f"f(opt, 1, noise 0) = {flat:.6f}")
    check("log scale", abs(scaled(16) - 0.5) < 1e-12 and scaled(1) == 0.0 and scaled(256) == 1.0,
          "s(1) = 0, s(16) = 0.5, s(256) = 1")
    low = mf_hartmann6(OPTIMUM, 4)
    check("noise is repeatable and only adds",
          low == mf_hartmann6(OPTIMUM, 4) and low >= mf_hartmann6(OPTIMUM, 4, noise=0.0)
          and low != mf_hartmann6(OPTIMUM, 4, seed=2),
          f"f(opt, 4) = {low:.6f}")
    draws = [half_normal(1, 4, [rng.random() for _ in range(6)]) for _ in range(20000)]
    m = statistics.fmean(draws)
    check("noise is |N(0,1)|", abs(m - math.sqrt(2 / math.pi)) < 0.02,
          f"mean draw {m:.4f}, expected {math.sqrt(2 / math.pi):.4f}")
    if not all(checks):
        sys.exit("compare_optuna: self-check failed")
    print("self-check passed")


# --- Cohort -------------------------------------------------------------------------------------


def run_cohort(args):
    """Runs the simulation; returns (per-run results, wall seconds)."""
    cmd = [args.cohort, "search", "simulate", args.experiment, "--workers", str(args.workers),
           "--repeat", str(args.cohort_repeat), "--bias", str(args.bias),
           "--noise", str(args.noise), "--json"]
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


def run_optuna(optuna, sampler_name, pruner_name, seed, budget, args):
    """One study; returns (final regret, budget spent, trials)."""
    spent = 0
    best = math.inf

    def objective(trial):
        nonlocal spent, best
        x = [trial.suggest_float(f"x{j}", 0.0, 1.0) for j in range(1, 7)]
        reached = 0
        for step in RUNGS + (Z_MAX,):
            if spent + step - reached > budget:
                # The budget ends inside this stretch: train up to it, and end the study.
                spent = budget
                trial.study.stop()
                raise optuna.TrialPruned()
            spent += step - reached
            reached = step
            value = mf_hartmann6(x, step, args.bias, args.noise, seed)
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
        study_name=f"hartmann6-seed{seed}",
        direction="minimize",
        sampler=make_sampler(optuna, sampler_name, seed),
        pruner=make_pruner(optuna, pruner_name),
    )
    study.optimize(objective, n_jobs=1)
    return best - GLOBAL_MIN, spent, len(study.trials)


# --- Report -------------------------------------------------------------------------------------


def summary(regrets):
    """(mean, standard error of the mean, median, runs with no trial at full length)."""
    finite = [r for r in regrets if math.isfinite(r)]
    failed = len(regrets) - len(finite)
    mean = statistics.fmean(regrets) if not failed else math.inf
    sem = statistics.stdev(finite) / math.sqrt(len(finite)) if len(finite) > 1 else math.nan
    return mean, sem, statistics.median(regrets), failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--cohort", help="the cohort binary")
    ap.add_argument("--experiment", default="examples/search/hartmann.toml")
    ap.add_argument("--workers", type=int, default=16, help="Cohort's parallel workers")
    ap.add_argument("--repeat", type=int, default=100, help="Optuna studies per sampler (seeds)")
    ap.add_argument("--cohort-repeat", type=int, default=100, help="Cohort runs (seeds)")
    ap.add_argument("--bias", type=float, default=0.5)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--pruner", action="append", choices=("hyperband", "asha"),
                    help="Optuna pruners to run (default: hyperband)")
    ap.add_argument("--self-check", action="store_true")
    args = ap.parse_args()

    if args.self_check:
        self_check()
        return
    if not args.cohort:
        ap.error("--cohort is required")
    if args.repeat < 1 or args.cohort_repeat < 1:
        ap.error("--repeat and --cohort-repeat must be at least 1")
    pruners = args.pruner or ["hyperband"]

    import optuna
    from importlib import metadata

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    version = metadata.version("optuna")

    cohort_runs, cohort_wall = run_cohort(args)
    budgets = [r["budget"] for r in cohort_runs]
    budget = round(statistics.fmean(budgets))
    cohort = summary([r["regret"] for r in cohort_runs])

    print(f"Multi-fidelity Hartmann 6-D: bias {args.bias}, noise {args.noise}, full length "
          f"{Z_MAX}; regret = H(best trial at full length) - ({GLOBAL_MIN:.5f})")
    print(f"Equal budget: {budget} units of training (Cohort ASHA's mean over "
          f"{len(cohort_runs)} seeds; its runs spent {min(budgets)}..{max(budgets)})")
    print(f"Optuna {version}, {args.repeat} seeds per sampler, trials one at a time")
    print()
    header = f"{'searcher':<34} {'seeds':>5} {'mean regret':>17} {'median':>8} " \
             f"{'budget':>7} {'trials':>7} {'wall s':>8}"
    print(header)
    print("-" * len(header))

    def row(name, stats, n, spent, trials, wall):
        mean, sem, median, failed = stats
        note = f"  ({failed} runs with nothing at full length)" if failed else ""
        print(f"{name:<34} {n:>5} {mean:>8.4f} ± {sem:<6.4f} {median:>8.4f} "
              f"{spent:>7.0f} {trials:>7.1f} {wall:>8.2f}{note}")

    row(f"Cohort ASHA ({args.workers} workers)", cohort, len(cohort_runs),
        statistics.fmean(budgets), statistics.fmean(r["trials"] for r in cohort_runs),
        cohort_wall)
    results = []
    for pruner in pruners:
        for sampler in ("tpe", "random"):
            start = time.perf_counter()
            runs = [run_optuna(optuna, sampler, pruner, seed, budget, args)
                    for seed in range(1, args.repeat + 1)]
            wall = time.perf_counter() - start
            name = f"Optuna {'TPE' if sampler == 'tpe' else 'Random'} + " \
                   f"{'Hyperband' if pruner == 'hyperband' else 'SuccessiveHalving'}"
            stats = summary([r[0] for r in runs])
            row(name, stats, len(runs), statistics.fmean(r[1] for r in runs),
                statistics.fmean(r[2] for r in runs), wall)
            results.append((name, stats))
    print("(mean regret ± standard error of the mean; budget and trials are means per run;")
    print(" wall s is the whole side: Cohort's command, or all of a sampler's studies)")
    print()
    for name, stats in results:
        ratio = cohort[0] / stats[0] if stats[0] > 0 else math.inf
        print(f"ratio Cohort ASHA / {name}: {ratio:.3f}  (<= 1: Cohort at least as good)")


if __name__ == "__main__":
    main()
