//! A launcher for measuring the controller (`cohort bench controller`), named as such: it
//! starts no process. Each trial "runs" for a drawn time on a thread of its own (one for all
//! trials), then writes its metric at the length it was given into the catalog through the
//! tracker, as a real trial would, and records its state `completed`; the controller sees it
//! end through [`Running::poll`] and reads the metric from the catalog like any other.

use std::collections::{BTreeMap, BinaryHeap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cohort_catalog::{Catalog, Tracker, TrackerOptions};
use cohort_proto::catalog::TrialState;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Handle, Job, Launcher, Outcome, Running};

/// When a simulated trial ends, and what it writes then.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ending {
    /// Reversed, so that the heap gives the earliest first.
    at: std::cmp::Reverse<Instant>,
    launch: u64,
    trial: u64,
    until: u64,
    /// The metric's bits.
    metric: u64,
}

/// What the runner thread and the handles share.
#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<(BinaryHeap<Ending>, bool)>,
    wake: Condvar,
    /// Launches that ended, with when their metric was written.
    ended: Mutex<BTreeMap<u64, Instant>>,
}

/// Runs trials as timers; see the module's documentation.
#[derive(Debug)]
pub struct SimulatedLauncher {
    shared: Arc<Shared>,
    runner: Option<std::thread::JoinHandle<()>>,
    rng: ChaCha8Rng,
    mean: Duration,
    launches: u64,
    /// When each launch was started.
    pub started: BTreeMap<u64, (u64, Instant)>,
}

impl SimulatedLauncher {
    /// Trials of `experiment` in `catalog` that run for a time drawn evenly between half and
    /// one and a half `mean`, each reporting `metric` from `value(hparams, until)`.
    pub fn new(
        catalog: Catalog,
        experiment: String,
        metric: String,
        mean: Duration,
        seed: u64,
    ) -> SimulatedLauncher {
        let shared = Arc::new(Shared::default());
        let runner_shared = Arc::clone(&shared);
        let runner = std::thread::Builder::new()
            .name("simulated-trials".into())
            .spawn(move || run(&runner_shared, &catalog, &experiment, &metric))
            .ok();
        SimulatedLauncher {
            shared,
            runner,
            rng: ChaCha8Rng::seed_from_u64(seed),
            mean,
            launches: 0,
            started: BTreeMap::new(),
        }
    }

    /// When each launch ended (its metric written), by launch number.
    pub fn ended(&self) -> BTreeMap<u64, Instant> {
        self.shared
            .ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for SimulatedLauncher {
    fn drop(&mut self) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1 = true;
        self.shared.wake.notify_all();
        if let Some(runner) = self.runner.take() {
            let _ = runner.join();
        }
    }
}

/// The runner: writes each trial's metric when its time comes.
fn run(shared: &Shared, catalog: &Catalog, experiment: &str, metric: &str) {
    loop {
        let due = {
            let mut queue = shared
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                if queue.1 {
                    return;
                }
                let now = Instant::now();
                match queue.0.peek() {
                    Some(next) if next.at.0 <= now => break queue.0.pop(),
                    Some(next) => {
                        let wait = next.at.0 - now;
                        queue = shared
                            .wake
                            .wait_timeout(queue, wait)
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .0;
                    }
                    None => {
                        queue = shared
                            .wake
                            .wait(queue)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                }
            }
        };
        let Some(ending) = due else { continue };
        let written = (|| {
            let tracker = Tracker::open(
                catalog,
                experiment,
                Some(ending.trial),
                TrackerOptions::default(),
            )
            .ok()?;
            let step = i64::try_from(ending.until).ok()?;
            tracker
                .log_metrics(step, &[(metric, f64::from_bits(ending.metric))])
                .ok()?;
            tracker.finish(TrialState::Completed).ok()
        })();
        // A trial that could not write ends all the same: the controller finds no metric.
        let _ = written;
        shared
            .ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(ending.launch, Instant::now());
    }
}

impl Launcher for SimulatedLauncher {
    fn launch(&mut self, job: &Job) -> Result<Box<dyn Running>, String> {
        self.launches += 1;
        let launch = self.launches;
        let factor = self.rng.gen_range(0.5..1.5);
        let at = Instant::now() + self.mean.mul_f64(factor);
        // The metric: a smooth function of the hyperparameters that improves with length.
        let spread: f64 = job
            .hparams
            .values()
            .filter_map(|v| v.as_f64())
            .map(|x| (x - 0.3).powi(2))
            .sum();
        #[allow(clippy::cast_precision_loss)]
        let metric = spread + 1.0 / (1.0 + job.until as f64);
        self.shared
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .push(Ending {
                at: std::cmp::Reverse(at),
                launch,
                trial: job.trial,
                until: job.until,
                metric: metric.to_bits(),
            });
        self.shared.wake.notify_all();
        self.started.insert(launch, (job.trial, Instant::now()));
        Ok(Box::new(SimulatedTrial {
            shared: Arc::clone(&self.shared),
            launch,
        }))
    }

    fn find(&mut self, _job: &Job) -> Option<Box<dyn Running>> {
        None
    }
}

/// One simulated trial's handle.
#[derive(Debug)]
struct SimulatedTrial {
    shared: Arc<Shared>,
    launch: u64,
}

impl Running for SimulatedTrial {
    fn poll(&mut self) -> Option<Outcome> {
        self.shared
            .ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(&self.launch)
            .then_some(Outcome::Completed)
    }

    fn handle(&self) -> Handle {
        Handle::Local {
            host: "simulated".into(),
            pid: 0,
        }
    }
}
