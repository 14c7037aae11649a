//! Hyperparameter search: the experiment file, the hyperparameter space, the searchers (single,
//! grid, random, ASHA over Hyperband brackets) and a simulator that runs a searcher against a
//! multi-fidelity benchmark function in simulated time.
//!
//! Searchers are pure, seeded state machines: they never start processes, read clocks or
//! touch the catalog, so the same file and seed always give the same decisions, and the
//! simulator and the controller drive them alike.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod controller;
pub mod hartmann;
pub mod preview;
pub mod searcher;
pub mod simulate;
pub mod space;
pub mod spec;

pub use searcher::{Decision, Next, Searcher};
pub use spec::{ExperimentSpec, SpecError};
