//! What a communicator is made from: [`CommOptions`], read from the `COHORT_*` environment a
//! launcher sets (every error names the variable) or given explicitly, and checked before any
//! connection is made.

use std::path::Path;
use std::time::Duration;

use cohort_proto::env as vars;
use cohort_proto::plan::Plan;

use crate::algo::Algorithm;
use crate::error::InitError;

/// Default deadline of every blocking operation (`COHORT_TIMEOUT`, seconds): long enough for
/// the largest allreduce of a real model over a slow network, short enough that a stuck job
/// ends the same hour. Dead peers are detected within seconds regardless.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Which transports may carry data between ranks on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Shared memory on one host, TCP between hosts.
    Auto,
    /// TCP everywhere (`COHORT_TRANSPORT=tcp`), for testing or where /dev/shm is unusable.
    Tcp,
    /// The slot protocol of RDMA write with immediate carried over TCP, everywhere
    /// (`COHORT_TRANSPORT=tcp-slots`): runs the RDMA path's chunking, credits and ordering
    /// where there is no verbs device.
    TcpSlots,
    /// RDMA verbs to every peer, on this host too (`COHORT_TRANSPORT=rdma`): fails, naming
    /// why, where a verbs link cannot be set up. (`auto` uses RDMA between hosts where both
    /// ends have a device, TCP otherwise.)
    Rdma,
}

/// Everything a communicator needs; [`CommOptions::from_env`] reads it from `COHORT_*`.
#[derive(Debug, Clone)]
pub struct CommOptions {
    /// This rank.
    pub rank: u32,
    /// Number of ranks.
    pub world_size: u32,
    /// Rank among this host's ranks.
    pub local_rank: u32,
    /// Number of ranks on this host.
    pub local_world_size: u32,
    /// Rendezvous store address (`host:port`), served by rank 0.
    pub store: String,
    /// The job secret every connection proves.
    pub secret: Vec<u8>,
    /// The plan, when there is one (ring order, addresses).
    pub plan: Option<Plan>,
    /// Deadline of every blocking operation.
    pub timeout: Duration,
    /// Transports allowed.
    pub transport: Transport,
    /// Allreduce algorithm.
    pub algorithm: Algorithm,
    /// TCP connections per peer between hosts (`COHORT_TCP_STREAMS`, 1 to 16); `None` picks
    /// from the speed of the interface this rank listens on (one per 25 Gb/s, at most 8).
    pub tcp_streams: Option<usize>,
    /// For rank 0: the store's listening socket, already bound to the store's port by the
    /// launcher and inherited as this file descriptor (`COHORT_STORE_FD`), so that no other
    /// process can take the port between its choice and its use. `None`: rank 0 binds the
    /// store's address itself.
    pub store_fd: Option<i32>,
}

/// The most TCP connections per peer.
pub(crate) const MAX_TCP_STREAMS: usize = 16;

fn env_var(var: &'static str) -> Result<String, InitError> {
    std::env::var(var).map_err(|e| InitError::Env {
        var,
        problem: match e {
            std::env::VarError::NotPresent => {
                "not set (start ranks with `cohort run` or under Slurm with --cohort)".into()
            }
            std::env::VarError::NotUnicode(_) => "not valid UTF-8".into(),
        },
    })
}

fn env_u32(var: &'static str) -> Result<u32, InitError> {
    let text = env_var(var)?;
    text.trim().parse().map_err(|_| InitError::Env {
        var,
        problem: format!("{text:?} is not a non-negative integer"),
    })
}

impl CommOptions {
    /// Reads `COHORT_RANK`, `COHORT_WORLD_SIZE`, `COHORT_LOCAL_RANK`,
    /// `COHORT_LOCAL_WORLD_SIZE`, `COHORT_STORE`, `COHORT_SECRET`, and the optional
    /// `COHORT_PLAN`, `COHORT_TIMEOUT` (seconds), `COHORT_TRANSPORT`
    /// (`auto`/`tcp`/`tcp-slots`/`rdma`), `COHORT_ALGO` (`auto`/`ring`/`rd`) and `COHORT_TCP_STREAMS` (`auto` or 1 to 16). Errors
    /// name the variable.
    pub fn from_env() -> Result<CommOptions, InitError> {
        let rank = env_u32(vars::RANK)?;
        let world_size = env_u32(vars::WORLD_SIZE)?;
        let local_rank = env_u32(vars::LOCAL_RANK)?;
        let local_world_size = env_u32(vars::LOCAL_WORLD_SIZE)?;
        let store = env_var(vars::STORE)?;
        let secret = env_var(vars::SECRET)?;
        if secret.len() < 16 {
            return Err(InitError::Env {
                var: vars::SECRET,
                problem: "shorter than 16 characters".into(),
            });
        }
        let plan = match std::env::var(vars::PLAN) {
            Ok(path) => Some(read_plan(Path::new(&path))?),
            Err(_) => None,
        };
        let timeout = match std::env::var(vars::TIMEOUT) {
            Ok(text) => {
                let seconds: f64 = text.trim().parse().map_err(|_| InitError::Env {
                    var: vars::TIMEOUT,
                    problem: format!("{text:?} is not a number of seconds"),
                })?;
                if seconds.is_nan() || seconds <= 0.0 || seconds >= 1e9 {
                    return Err(InitError::Env {
                        var: vars::TIMEOUT,
                        problem: format!("{text:?} must be a positive number of seconds"),
                    });
                }
                Duration::from_secs_f64(seconds)
            }
            Err(_) => DEFAULT_TIMEOUT,
        };
        let transport = match std::env::var(vars::TRANSPORT).as_deref() {
            Err(_) | Ok("auto") => Transport::Auto,
            Ok("tcp") => Transport::Tcp,
            Ok("tcp-slots") => Transport::TcpSlots,
            Ok("rdma") => Transport::Rdma,
            Ok(other) => {
                return Err(InitError::Env {
                    var: vars::TRANSPORT,
                    problem: format!("{other:?} is not one of auto, tcp, tcp-slots, rdma"),
                })
            }
        };
        let algorithm = match std::env::var(vars::ALGO) {
            Err(_) => Algorithm::Auto,
            Ok(text) => Algorithm::parse(&text).ok_or_else(|| InitError::Env {
                var: vars::ALGO,
                problem: format!("{text:?} is not one of auto, ring, rd, hier"),
            })?,
        };
        let tcp_streams = match std::env::var(vars::TCP_STREAMS).as_deref() {
            Err(_) | Ok("auto") => None,
            Ok(text) => Some(
                text.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_TCP_STREAMS).contains(n))
                    .ok_or_else(|| InitError::Env {
                        var: vars::TCP_STREAMS,
                        problem: format!("{text:?} is not auto or a number from 1 to 16"),
                    })?,
            ),
        };
        let store_fd = match std::env::var(vars::STORE_FD) {
            Ok(text) => Some(
                text.trim()
                    .parse::<i32>()
                    .ok()
                    .filter(|fd| *fd > 2)
                    .ok_or_else(|| InitError::Env {
                        var: vars::STORE_FD,
                        problem: format!("{text:?} is not an inherited file descriptor number"),
                    })?,
            ),
            Err(_) => None,
        };
        let options = CommOptions {
            rank,
            world_size,
            local_rank,
            local_world_size,
            store,
            secret: secret.into_bytes(),
            plan,
            timeout,
            transport,
            algorithm,
            tcp_streams,
            store_fd,
        };
        options.check()?;
        Ok(options)
    }

    pub(crate) fn check(&self) -> Result<(), InitError> {
        let bad = |var: &'static str, problem: String| Err(InitError::Env { var, problem });
        if self.world_size == 0 {
            return bad(vars::WORLD_SIZE, "must be at least 1".into());
        }
        if self.rank >= self.world_size {
            return bad(
                vars::RANK,
                format!(
                    "{} is not below the world size {}",
                    self.rank, self.world_size
                ),
            );
        }
        if self.local_rank >= self.local_world_size.max(1) {
            return bad(
                vars::LOCAL_RANK,
                format!(
                    "{} is not below the local world size {}",
                    self.local_rank, self.local_world_size
                ),
            );
        }
        if let Some(plan) = &self.plan {
            if plan.world_size() != self.world_size {
                return Err(InitError::Plan {
                    path: vars::PLAN.into(),
                    problem: format!(
                        "{} ranks, but COHORT_WORLD_SIZE is {}",
                        plan.world_size(),
                        self.world_size
                    ),
                });
            }
            if plan.rank(self.rank).is_none() {
                return Err(InitError::Plan {
                    path: vars::PLAN.into(),
                    problem: format!("this node's share has no rank {}", self.rank),
                });
            }
        }
        Ok(())
    }
}

fn read_plan(path: &Path) -> Result<Plan, InitError> {
    let fail = |problem: String| InitError::Plan {
        path: path.display().to_string(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    Plan::from_json(&bytes).map_err(|e| fail(e.to_string()))
}
