//! Slurm's warnings to a job's tasks, watched for a worker that asked
//! [`crate::Tracker::should_stop`] (from its first call on; the handlers only set a flag):
//!
//! - the stop signal, sent ahead of the time limit when the job asks for it (`#SBATCH
//!   --signal=USR2@120`), or at a preemption with `PreemptParameters=send_user_signal`;
//! - SIGTERM, which Slurm sends when it preempts, requeues or cancels a job, or at its time
//!   limit, some seconds (`KillWait`, `GraceTime`) before SIGKILL.
//!
//! Either makes `should_stop` true on every rank at the same step; the worker checkpoints
//! and exits with the status [`crate::Tracker::exit_status`] gives, which tells the Slurm
//! plugin which of the two it was. A worker that never asks keeps the signals' default
//! actions.
//!
//! The stop signal is SIGUSR2 unless `COHORT_STOP_SIGNAL` names another (`URG`, `SIGUSR1`, a
//! number): SIGUSR1 is left alone by default because some launchers and profilers use it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use cohort_proto::env as vars;
use signal_hook::consts::{SIGTERM, SIGUSR2};

/// A warning a worker received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Warning {
    /// The stop signal (its number): the time limit is near.
    StopSignal(i32),
    /// SIGTERM: Slurm is ending the job now.
    Terminate,
}

/// The signals watched and whether each has arrived.
#[derive(Debug)]
struct Watch {
    signal: i32,
    stop: Arc<AtomicBool>,
    terminate: Arc<AtomicBool>,
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
    let stop = Arc::new(AtomicBool::new(false));
    let terminate = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal, Arc::clone(&stop))
        .map_err(|e| format!("cannot watch for the stop signal {signal}: {e}"))?;
    if signal != SIGTERM {
        signal_hook::flag::register(SIGTERM, Arc::clone(&terminate))
            .map_err(|e| format!("cannot watch for SIGTERM: {e}"))?;
    }
    Ok(Watch {
        signal,
        stop,
        terminate,
    })
}

/// Starts watching for the stop signal and SIGTERM (once per process; later calls do
/// nothing). Returns why it could not, if so: a bad `COHORT_STOP_SIGNAL`, or a signal that
/// cannot be handled.
pub fn watch() -> Result<(), String> {
    match WATCH.get_or_init(install) {
        Ok(_) => Ok(()),
        Err(why) => Err(why.clone()),
    }
}

/// The most urgent warning that has arrived since [`watch`] began: SIGTERM over the stop
/// signal.
pub fn received() -> Option<Warning> {
    let watch = WATCH.get()?.as_ref().ok()?;
    if watch.terminate.load(Ordering::Relaxed) {
        Some(Warning::Terminate)
    } else if watch.stop.load(Ordering::Relaxed) {
        Some(if watch.signal == SIGTERM {
            Warning::Terminate
        } else {
            Warning::StopSignal(watch.signal)
        })
    } else {
        None
    }
}
