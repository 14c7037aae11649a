"""A training loop Slurm may stop, for tests/slurm/preemption.sh: it goes on from its trial's
latest checkpoint, logs a loss every step, checkpoints every few steps and at the step the ranks
agree to stop at (Slurm's warning: the stop signal or SIGTERM), and exits with the status the
tracker gives (75, 143) so that the Slurm plugin records the trial as preempted.

    python3 preemptible.py UNTIL [--step-seconds S] [--every N] [--after-resume K]
                                 [--die-on-warning-rank R]

--after-resume K: a resumed launch trains K more steps at most (so that a test's second launch
ends well inside its time limit). --die-on-warning-rank R: rank R ignores the agreement and is
killed by the stop signal (SIGUSR2) instead.
"""

import argparse
import os
import signal
import sys
import time

import cohort


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("until", type=int)
    parser.add_argument("--step-seconds", type=float, default=0.2)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--after-resume", type=int)
    parser.add_argument("--die-on-warning-rank", type=int)
    args = parser.parse_args()
    rank = int(os.environ["COHORT_RANK"])
    if args.die_on_warning_rank == rank:
        signal.signal(signal.SIGUSR2, lambda *_: os.kill(os.getpid(), signal.SIGKILL))
    tracker = cohort.Tracker.from_env()
    latest = tracker.latest_checkpoint()
    start = latest.step if latest else 0
    until = args.until
    if start and args.after_resume is not None:
        until = min(until, start + args.after_resume)
    launch = os.environ.get("SLURM_RESTART_COUNT", "0")
    print(f"rank {rank} launch {launch} from step {start}", flush=True)
    step = start
    for step in range(start + 1, until + 1):
        time.sleep(args.step_seconds)
        tracker.log({"loss": 1.0 / step}, step)
        stop = tracker.should_stop(step)  # on every rank, every step: they agree
        if tracker.enabled and (stop or step % args.every == 0 or step == until):
            path = os.path.join(tracker.trial_dir, f"ckpt-{step}")
            with open(path, "w") as f:
                f.write(str(step))
            tracker.checkpoint(path, step)
        if stop:
            print(f"rank {rank} stopped at step {step}: {tracker.stop_reason(step)}", flush=True)
            break
    tracker.finish()
    return tracker.exit_status


if __name__ == "__main__":
    sys.exit(main())
