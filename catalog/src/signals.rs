//! The warnings Slurm gives a job before taking its nodes back: SIGTERM when the job is
//! preempted, cancelled or requeued (SIGKILL follows after the cluster's grace time), and
//! the signal a user asks for ahead of the time limit with `--signal=USR2@120`. A worker that
//! asks [`crate::Tracker::should_stop`] has opted into stopping cleanly: from its first call
//! on, these signals set a flag (the handlers do nothing else) and `should_stop` answers true,
//! so the worker checkpoints and exits. A second SIGTERM ends the process as it would have
//! without the handlers. A worker that never asks keeps the signals' default actions.
//!
//! The warning signal is SIGUSR2 unless `COHORT_STOP_SIGNAL` names another (`USR1`,
//! `SIGURG`, a number): SIGUSR1 is left alone by default because some launchers and profilers
//! use it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use cohort_proto::env as vars;
use signal_hook::consts::{SIGTERM, SIGUSR2};

/// The warning signal that arrived last (0: none yet), and whether a SIGTERM has.
#[derive(Debug)]
struct Flags {
    received: Arc<AtomicUsize>,
    terminated: Arc<AtomicBool>,
}

static FLAGS: OnceLock<Result<Flags, String>> = OnceLock::new();

/// The warning signal `COHORT_STOP_SIGNAL` names (default SIGUSR2).
pub fn stop_signal() -> Result<i32, String> {
    let Ok(text) = std::env::var(vars::STOP_SIGNAL) else {
        return Ok(SIGUSR2);
    };
    let name = text.trim().trim_start_matches("SIG").to_ascii_uppercase();
    if let Ok(number) = name.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(number)
            .map(|s| s as i32)
            .map_err(|_| format!("{}={text:?}: not a signal", vars::STOP_SIGNAL));
    }
    format!("SIG{name}")
        .parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| format!("{}={text:?}: not a signal", vars::STOP_SIGNAL))
}

fn install() -> Result<Flags, String> {
    let signal = stop_signal()?;
    let flags = Flags {
        received: Arc::new(AtomicUsize::new(0)),
        terminated: Arc::new(AtomicBool::new(false)),
    };
    let failed = |e: std::io::Error| format!("cannot watch for Slurm's signals: {e}");
    // Run in the order registered: a SIGTERM that finds the flag already set takes the
    // default action (the process ends); the first one only sets it.
    signal_hook::flag::register_conditional_default(SIGTERM, Arc::clone(&flags.terminated))
        .map_err(failed)?;
    signal_hook::flag::register(SIGTERM, Arc::clone(&flags.terminated)).map_err(failed)?;
    for (number, value) in [(SIGTERM, SIGTERM), (signal, signal)] {
        let value = usize::try_from(value).unwrap_or(usize::MAX);
        signal_hook::flag::register_usize(number, Arc::clone(&flags.received), value)
            .map_err(failed)?;
    }
    Ok(flags)
}

/// Starts watching for the warnings (once per process; later calls do nothing). Returns why
/// it could not, if so: a bad `COHORT_STOP_SIGNAL`, or a signal that cannot be handled.
pub fn watch() -> Result<(), String> {
    match FLAGS.get_or_init(install) {
        Ok(_) => Ok(()),
        Err(why) => Err(why.clone()),
    }
}

/// The warning signal received since [`watch`] began, if any (SIGTERM or the stop signal).
pub fn received() -> Option<i32> {
    let flags = FLAGS.get()?.as_ref().ok()?;
    match flags.received.load(Ordering::Relaxed) {
        0 => None,
        n => i32::try_from(n).ok(),
    }
}
