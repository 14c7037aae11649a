//! Hyperparameter search: the experiment file, the hyperparameter space, the searchers (single,
//! grid, random, ASHA over Hyperband brackets), a simulator that runs a searcher against a
//! multi-fidelity benchmark function in simulated time (and compares ASHA with random search
//! there), and the controller that drives a searcher with real trials, started by the
//! launchers of `launch` (`cohort run` on this machine, or Slurm jobs).
//!
//! Searchers are pure, seeded state machines: they never start processes, read clocks or
//! touch the catalog, so the same file and seed always give the same decisions, and the
//! simulator and the controller drive them alike. The controller's records are
//! `cohort_proto::search`'s, and it finds its files and the trials' through the catalog.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod compare;
pub mod controller;
pub mod functions;
pub mod fuzzing;
pub mod launch;
pub mod preview;
pub mod searcher;
pub mod simulate;
pub mod space;
pub mod spec;
pub mod tpe;

pub use searcher::{Decision, Next, Searcher};
pub use spec::{ExperimentSpec, SpecError};
