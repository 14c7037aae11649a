//! The warning Slurm gives a job ahead of its time limit when asked (`#SBATCH
//! --signal=USR2@120`): a signal to every task. A worker that asks
//! [`crate::Tracker::should_stop`] has opted into stopping cleanly: from its first call on,
//! the stop signal sets a flag (the handler does nothing else) and `should_stop` answers true,
//! so the worker checkpoints and exits before the limit. A worker that never asks keeps the
//! signal's default action.
//!
//! The stop signal is SIGUSR2 unless `COHORT_STOP_SIGNAL` names another (`URG`, `SIGUSR1`, a
//! number): SIGUSR1 is left alone by default because some launchers and profilers use it, and
//! SIGTERM, which Slurm sends when it cancels, preempts or requeues a job, keeps its default
//! action.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use cohort_proto::env as vars;
use signal_hook::consts::SIGUSR2;

/// The stop signal and whether it has arrived.
#[derive(Debug)]
struct Watch {
    signal: i32,
    received: Arc<AtomicBool>,
}

static WATCH: OnceLock<Result<Watch, String>> = OnceLock::new();

/// The stop signal `COHORT_STOP_SIGNAL` names (default SIGUSR2).
pub fn stop_signal() -> Result<i32, String> {
    let Ok(text) = std::env::var(vars::STOP_SIGNAL) else {
        return Ok(SIGUSR2);
    };
    let bad = || format!("{}={text:?}: not a signal", vars::STOP_SIGNAL);
    let name = text.trim().trim_start_matches("SIG").to_ascii_uppercase();
    let signal = match name.parse::<i32>() {
        Ok(number) => nix::sys::signal::Signal::try_from(number).map_err(|_| bad())?,
        Err(_) => format!("SIG{name}")
            .parse::<nix::sys::signal::Signal>()
            .map_err(|_| bad())?,
    };
    if matches!(
        signal,
        nix::sys::signal::Signal::SIGKILL
            | nix::sys::signal::Signal::SIGSTOP
            | nix::sys::signal::Signal::SIGSEGV
            | nix::sys::signal::Signal::SIGILL
            | nix::sys::signal::Signal::SIGFPE
            | nix::sys::signal::Signal::SIGBUS
    ) {
        return Err(format!(
            "{}={text:?}: {signal} cannot be a stop signal",
            vars::STOP_SIGNAL
        ));
    }
    Ok(signal as i32)
}

fn install() -> Result<Watch, String> {
    let signal = stop_signal()?;
    let received = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal, Arc::clone(&received))
        .map_err(|e| format!("cannot watch for the stop signal {signal}: {e}"))?;
    Ok(Watch { signal, received })
}

/// Starts watching for the stop signal (once per process; later calls do nothing). Returns
/// why it could not, if so: a bad `COHORT_STOP_SIGNAL`, or a signal that cannot be handled.
pub fn watch() -> Result<(), String> {
    match WATCH.get_or_init(install) {
        Ok(_) => Ok(()),
        Err(why) => Err(why.clone()),
    }
}

/// The stop signal, if it has arrived since [`watch`] began.
pub fn received() -> Option<i32> {
    let watch = WATCH.get()?.as_ref().ok()?;
    watch
        .received
        .load(Ordering::Relaxed)
        .then_some(watch.signal)
}
