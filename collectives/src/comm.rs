//! The `Communicator`: set-up from the environment or explicit options, rendezvous through the
//! store, links to every peer, and the operations (blocking and asynchronous).

use cohort_proto::env as vars;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cohort_proto::plan::Plan;

use crate::algo::{Algorithm, Mesh};
use crate::auth::handshake;
use crate::dtype::{Element, ReduceOp};
use crate::engine::Peer;
use crate::error::{CommError, InitError};
use crate::link::shm::{self, ShmLink};
use crate::link::slots::{SlotLink, TcpWire};
use crate::link::tcp::{StripedLink, TcpLink};
use crate::link::Link;
use crate::store::{StoreClient, StoreServer};

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

/// Receive slots per peer of the slot protocol, and their size.
const SLOTS: usize = 16;
const SLOT_SIZE: usize = 256 << 10;

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

    fn check(&self) -> Result<(), InitError> {
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
            if plan.ranks.len() != self.world_size as usize {
                return Err(InitError::Plan {
                    path: vars::PLAN.into(),
                    problem: format!(
                        "{} ranks, but COHORT_WORLD_SIZE is {}",
                        plan.ranks.len(),
                        self.world_size
                    ),
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

/// What each rank publishes in the store.
#[derive(Debug, Clone)]
struct Endpoint {
    host: String,
    boot_id: String,
    pid: i32,
    address: SocketAddr,
    /// Whether this rank can set up RDMA links.
    rdma: bool,
}

impl Endpoint {
    fn encode(&self) -> Vec<u8> {
        format!(
            "{}\n{}\n{}\n{}\n{}",
            self.host,
            self.boot_id,
            self.pid,
            self.address,
            if self.rdma { "rdma" } else { "-" }
        )
        .into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Endpoint> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        Some(Endpoint {
            host: lines.next()?.to_owned(),
            boot_id: lines.next()?.to_owned(),
            pid: lines.next()?.parse().ok()?,
            address: lines.next()?.parse().ok()?,
            rdma: lines.next() == Some("rdma"),
        })
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// A short tag that names this job's shared-memory files.
fn job_tag(secret: &[u8], store: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(secret)
        .chain_update(store.as_bytes())
        .finalize();
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes the shared-memory ring files a job left behind, if any (ranks unlink them once
/// mapped, so only a rank killed during set-up leaves some); returns how many were removed.
/// Launchers call it when a job ends, with the job's secret and store address.
pub fn remove_job_shm(secret: &[u8], store: &str) -> usize {
    let prefix = format!("cohort-{}-", job_tag(secret, store));
    let Ok(entries) = std::fs::read_dir(shm_dir()) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|entry| std::fs::remove_file(entry.path()).is_ok())
        .count()
}

fn shm_dir() -> PathBuf {
    let dev_shm = PathBuf::from("/dev/shm");
    if dev_shm.is_dir() {
        dev_shm
    } else {
        std::env::temp_dir()
    }
}

/// A job in the asynchronous queue.
type Job = Box<dyn FnOnce(&mut Mesh) + Send>;

#[derive(Debug, Default)]
struct Pending {
    count: Mutex<usize>,
    drained: Condvar,
}

/// A group of ranks that run collectives together.
///
/// Operations must be called in the same order on every rank. Blocking operations run on the
/// calling thread; `*_async` ones run, in submission order, on the communicator's worker
/// thread, and a blocking call first waits for earlier asynchronous ones.
#[derive(Debug)]
pub struct Communicator {
    mesh: Arc<Mutex<Mesh>>,
    abort: Arc<AtomicBool>,
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    pending: Arc<Pending>,
    rank: u32,
    size: u32,
    transports: Vec<&'static str>,
}

/// Lets any thread abort a communicator's pending and future operations.
#[derive(Debug, Clone)]
pub struct AbortHandle(Arc<AtomicBool>);

impl AbortHandle {
    /// Makes every pending and future operation fail with [`CommError::Aborted`].
    pub fn abort(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The result of an asynchronous operation.
#[derive(Debug)]
pub struct Handle<R> {
    receiver: mpsc::Receiver<Result<R, CommError>>,
}

impl<R> Handle<R> {
    /// Waits for the operation.
    pub fn wait(self) -> Result<R, CommError> {
        self.receiver.recv().unwrap_or(Err(CommError::Aborted))
    }

    /// Waits at most `timeout`; gives the handle back if the operation is still running.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Result<R, CommError>, Handle<R>> {
        match self.receiver.recv_timeout(timeout) {
            Ok(result) => Ok(result),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(self),
            Err(mpsc::RecvTimeoutError::Disconnected) => Ok(Err(CommError::Aborted)),
        }
    }
}

fn lock(mesh: &Mutex<Mesh>) -> std::sync::MutexGuard<'_, Mesh> {
    mesh.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Communicator {
    /// Creates a communicator from the `COHORT_*` environment.
    pub fn from_env() -> Result<Communicator, InitError> {
        Communicator::new(CommOptions::from_env()?)
    }

    /// Creates a communicator: rendezvous, then links to every peer (shared memory on this
    /// host unless TCP is asked for, TCP otherwise).
    pub fn new(options: CommOptions) -> Result<Communicator, InitError> {
        options.check()?;
        let deadline = Instant::now() + options.timeout;
        let rank = options.rank;
        let size = options.world_size;
        let my_plan = options.plan.as_ref().map(|plan| &plan.ranks[rank as usize]);
        let host = my_plan.map_or_else(hostname, |p| p.host.clone());
        let bind_ip = my_plan.map_or("127.0.0.1", |p| p.address.as_str());
        if rank == 0 {
            let listener = match options.store_fd {
                Some(fd) => crate::inherit::store_listener(fd, &options.store)?,
                None => TcpListener::bind(&options.store).map_err(|e| {
                    CommError::io(format!("rank 0 serving the store on {}", options.store), e)
                })?,
            };
            StoreServer::spawn(listener, options.secret.clone())?;
        }
        let mut store = StoreClient::connect(&options.store, &options.secret, rank, deadline)?;
        let listener = TcpListener::bind((bind_ip, 0))
            .map_err(|e| CommError::io(format!("listening on {bind_ip}"), e))?;
        // Whether this rank offers RDMA, or why not.
        let rdma_here = rdma_available(options.transport);
        if let (Transport::Rdma, Err(why)) = (options.transport, &rdma_here) {
            return Err(CommError::Invalid(format!("COHORT_TRANSPORT=rdma, but {why}")).into());
        }
        let me = Endpoint {
            host: host.clone(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            pid: i32::try_from(std::process::id()).unwrap_or(0),
            address: listener
                .local_addr()
                .map_err(|e| CommError::io("listener address", e))?,
            rdma: rdma_here.is_ok(),
        };
        store.set(&format!("endpoint/{rank}"), &me.encode(), deadline)?;
        let mut endpoints = Vec::with_capacity(size as usize);
        for peer in 0..size {
            let bytes = store.get(&format!("endpoint/{peer}"), deadline)?;
            let endpoint = Endpoint::decode(&bytes).ok_or_else(|| CommError::Store {
                address: options.store.clone(),
                detail: format!("rank {peer} published a malformed endpoint"),
            })?;
            endpoints.push(endpoint);
        }
        let same_host = |peer: usize| {
            options.transport == Transport::Auto
                && endpoints[peer].host == me.host
                && endpoints[peer].boot_id == me.boot_id
        };
        let mut peers: Vec<Option<Peer>> = (0..size).map(|_| None).collect();

        // Shared memory: create the rings this rank reads, open each pair once both exist,
        // then unlink the files (the mappings stay) so nothing is left in /dev/shm.
        let tag = job_tag(&options.secret, &options.store);
        let dir = shm_dir();
        let local: Vec<u32> = (0..size)
            .filter(|&p| p != rank && same_host(p as usize))
            .collect();
        let mut created = Vec::new();
        for &peer in &local {
            let path = shm::ring_path(&dir, &tag, peer, rank);
            shm::create_inbound(&path)
                .map_err(|e| CommError::io(format!("creating {}", path.display()), e))?;
            created.push(path);
        }
        store.set(&format!("shm-created/{rank}"), b"1", deadline)?;
        for &peer in &local {
            store.get(&format!("shm-created/{peer}"), deadline)?;
            let outbound = shm::ring_path(&dir, &tag, rank, peer);
            let inbound = shm::ring_path(&dir, &tag, peer, rank);
            let link = ShmLink::open(&outbound, &inbound, endpoints[peer as usize].pid)
                .map_err(|e| CommError::io(format!("opening {}", outbound.display()), e))?;
            peers[peer as usize] = Some(Peer {
                rank: peer,
                host: endpoints[peer as usize].host.clone(),
                link: Box::new(link),
            });
        }
        store.set(&format!("shm-opened/{rank}"), b"1", deadline)?;
        for &peer in &local {
            store.get(&format!("shm-opened/{peer}"), deadline)?;
        }
        for path in created {
            let _ = std::fs::remove_file(path);
        }

        // TCP: connect to lower ranks, accept higher ones; each connection proves the secret.
        let remote: Vec<u32> = (0..size)
            .filter(|&p| p != rank && peers[p as usize].is_none())
            .collect();
        // RDMA to a peer: both ends offer it, and it is on another machine (or asked for).
        let rdma_to = |peer: u32| {
            let endpoint = &endpoints[peer as usize];
            me.rdma
                && endpoint.rdma
                && (options.transport == Transport::Rdma
                    || endpoint.host != me.host
                    || endpoint.boot_id != me.boot_id)
        };
        if options.transport == Transport::Rdma {
            if let Some(&peer) = remote.iter().find(|&&p| !endpoints[p as usize].rdma) {
                return Err(CommError::PeerGone {
                    rank: peer,
                    host: endpoints[peer as usize].host.clone(),
                    detail: "COHORT_TRANSPORT=rdma, but it has no RDMA device".into(),
                }
                .into());
            }
        }
        // The connecting side picks how many streams; each connection says which it is.
        let streams_to = |peer: u32| match options.transport {
            _ if rdma_to(peer) => 1,
            Transport::TcpSlots => 1,
            _ => options
                .tcp_streams
                .unwrap_or_else(|| auto_tcp_streams(me.address.ip()))
                .clamp(1, MAX_TCP_STREAMS),
        };
        let link_kind = |peer: u32| {
            if rdma_to(peer) {
                LinkKind::Rdma {
                    ip: me.address.ip(),
                    required: options.transport == Transport::Rdma,
                    deadline,
                }
            } else if options.transport == Transport::TcpSlots {
                LinkKind::Slots
            } else {
                LinkKind::Tcp
            }
        };
        // Why some peer on another machine is reached over TCP (said once, by rank 0).
        let mut tcp_because: Option<String> = None;
        for &peer in remote.iter().filter(|&&p| p < rank) {
            let endpoint = &endpoints[peer as usize];
            let streams = streams_to(peer);
            let mut connected = Vec::with_capacity(streams);
            for index in 0..streams {
                let mut stream = connect_with_retry(endpoint.address, deadline).map_err(|e| {
                    CommError::PeerGone {
                        rank: peer,
                        host: endpoint.host.clone(),
                        detail: format!("cannot connect to {}: {e}", endpoint.address),
                    }
                })?;
                let who = format!("rank {peer} at {}", endpoint.address);
                let id = handshake(&mut stream, &options.secret, rank, true, deadline, &who)?;
                if id != peer {
                    return Err(CommError::Auth {
                        who,
                        detail: format!("answered as rank {id}"),
                    }
                    .into());
                }
                #[allow(clippy::cast_possible_truncation)] // both at most MAX_TCP_STREAMS
                stream
                    .write_all(&[index as u8, streams as u8])
                    .map_err(|e| CommError::io("connecting a stream", e))?;
                connected.push(stream);
            }
            let (link, why) = remote_peer(connected, peer, &endpoint.host, link_kind(peer))?;
            tcp_because = tcp_because.or(why);
            peers[peer as usize] = Some(link);
        }
        let mut waiting: Vec<u32> = remote.iter().copied().filter(|&p| p > rank).collect();
        // Streams of each connecting peer so far, by index.
        let mut arriving: std::collections::HashMap<u32, Vec<Option<TcpStream>>> =
            std::collections::HashMap::new();
        listener
            .set_nonblocking(true)
            .map_err(|e| CommError::io("listener", e))?;
        while !waiting.is_empty() {
            match listener.accept() {
                Ok((mut stream, from)) => {
                    let _ = stream.set_nonblocking(false);
                    let who = format!("a connection from {from}");
                    match handshake(&mut stream, &options.secret, rank, false, deadline, &who) {
                        Ok(id) if waiting.contains(&id) => {
                            let (index, count) = match stream_header(&mut stream, deadline) {
                                Ok(header) => header,
                                Err(e) => {
                                    eprintln!("cohort: rank {rank} refused {who}: {e}");
                                    continue;
                                }
                            };
                            let slots = arriving
                                .entry(id)
                                .or_insert_with(|| (0..count).map(|_| None).collect());
                            if slots.len() != count || slots[index].is_some() {
                                eprintln!("cohort: rank {rank} refused {who}: stream {index} of {count} from rank {id} came twice or does not match its others");
                                continue;
                            }
                            slots[index] = Some(stream);
                            if slots.iter().all(Option::is_some) {
                                let streams = arriving
                                    .remove(&id)
                                    .unwrap_or_default()
                                    .into_iter()
                                    .flatten()
                                    .collect();
                                waiting.retain(|&p| p != id);
                                let host = endpoints[id as usize].host.clone();
                                let (link, why) = remote_peer(streams, id, &host, link_kind(id))?;
                                tcp_because = tcp_because.or(why);
                                peers[id as usize] = Some(link);
                            }
                        }
                        Ok(id) => {
                            eprintln!("cohort: rank {rank} refused {who}: unexpected rank {id}")
                        }
                        Err(e) => eprintln!("cohort: rank {rank} refused {e}"),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        let peer = waiting[0];
                        return Err(CommError::Timeout {
                            op: "connecting ranks",
                            rank: peer,
                            host: endpoints[peer as usize].host.clone(),
                            elapsed: options.timeout,
                            culprit: None,
                        }
                        .into());
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(CommError::io("accepting a peer", e).into()),
            }
        }

        let tcp_between_hosts = endpoints.iter().enumerate().any(|(peer, e)| {
            (e.host != me.host || e.boot_id != me.boot_id)
                && peers[peer]
                    .as_ref()
                    .is_some_and(|p| p.link.kind() != "rdma")
        });
        if rank == 0 && tcp_between_hosts {
            let why = match (&rdma_here, tcp_because) {
                (Err(why), _) => why.clone(),
                (Ok(()), Some(why)) => why,
                (Ok(()), None) => "a peer has no RDMA device".to_owned(),
            };
            eprintln!("cohort: using TCP between hosts: {why}");
        }
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let ring = options
            .plan
            .as_ref()
            .and_then(|plan| plan.rings.first().cloned())
            .unwrap_or_else(|| (0..size).collect());
        let machines: Vec<String> = endpoints
            .iter()
            .map(|e| format!("{}/{}", e.host, e.boot_id))
            .collect();
        let ring_order = ring.clone();
        let transports = peers
            .iter()
            .flatten()
            .map(|peer| peer.link.kind())
            .collect::<Vec<_>>();
        let abort = Arc::new(AtomicBool::new(false));
        let mesh = Mesh {
            rank,
            size,
            any_tcp: transports.iter().any(|t| t.starts_with("tcp")),
            peers,
            ring,
            abort: Arc::clone(&abort),
            timeout: options.timeout,
            algorithm: options.algorithm,
            store: Some(store),
            hosts: endpoints.iter().map(|e| e.host.clone()).collect(),
            op_seq: 0,
            scratch: Vec::new(),
            hierarchy: crate::algo::Hierarchy::new(&ring_order, &machines, rank),
            spins: if local.len() + 1 > cores {
                crate::engine::SPINS_OVERSUBSCRIBED
            } else {
                crate::engine::SPINS
            },
        };
        let communicator = Communicator {
            mesh: Arc::new(Mutex::new(mesh)),
            abort,
            queue: Mutex::new(None),
            pending: Arc::new(Pending::default()),
            rank,
            size,
            transports,
        };
        // Everyone is connected before anyone returns, so the first operation cannot race
        // a slow peer's set-up.
        communicator.barrier()?;
        Ok(communicator)
    }

    /// This rank.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// Number of ranks.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// How many peers are reached over each transport, e.g. `shm:3 tcp:4` (`rdma:N` and
    /// `tcp-slots:N` added where there are any).
    pub fn transport_summary(&self) -> String {
        let count = |kind: &str| self.transports.iter().filter(|&&t| t == kind).count();
        let mut summary = format!("shm:{} tcp:{}", count("shm"), count("tcp"));
        for kind in ["rdma", "tcp-slots"] {
            if count(kind) > 0 {
                use std::fmt::Write;
                let _ = write!(summary, " {kind}:{}", count(kind));
            }
        }
        summary
    }

    /// A handle that aborts this communicator from any thread.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle(Arc::clone(&self.abort))
    }

    /// Makes every pending and future operation fail with [`CommError::Aborted`].
    pub fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
    }

    fn check_aborted(&self) -> Result<(), CommError> {
        if self.abort.load(Ordering::Relaxed) {
            Err(CommError::Aborted)
        } else {
            Ok(())
        }
    }

    /// Runs `f` on the mesh after every earlier asynchronous operation has finished.
    fn blocking<R>(
        &self,
        f: impl FnOnce(&mut Mesh) -> Result<R, CommError>,
    ) -> Result<R, CommError> {
        self.check_aborted()?;
        let mut count = self
            .pending
            .count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *count > 0 {
            count = self
                .pending
                .drained
                .wait(count)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        drop(count);
        let mut mesh = lock(&self.mesh);
        mesh.run_op(f)
    }

    fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Mesh) -> Result<R, CommError> + Send + 'static,
    ) -> Handle<R> {
        let (sender, receiver) = mpsc::sync_channel(1);
        let handle = Handle { receiver };
        if let Err(e) = self.check_aborted() {
            let _ = sender.send(Err(e));
            return handle;
        }
        let mut queue = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if queue.is_none() {
            let (jobs, incoming) = mpsc::channel::<Job>();
            let mesh = Arc::clone(&self.mesh);
            let spawned = std::thread::Builder::new()
                .name(format!("cohort-comm-{}", self.rank))
                .spawn(move || {
                    for job in incoming {
                        let mut guard = lock(&mesh);
                        job(&mut guard);
                    }
                });
            if let Err(e) = spawned {
                let _ = sender.send(Err(CommError::io("starting the worker thread", e)));
                return handle;
            }
            *queue = Some(jobs);
        }
        *self
            .pending
            .count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        let pending = Arc::clone(&self.pending);
        let job: Job = Box::new(move |mesh: &mut Mesh| {
            let _ = sender.send(mesh.run_op(f));
            let mut count = pending
                .count
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *count -= 1;
            pending.drained.notify_all();
        });
        if let Some(jobs) = queue.as_ref() {
            let _ = jobs.send(job);
        }
        handle
    }

    /// Reduces `data` across all ranks in place; every rank gets the same bits.
    pub fn allreduce<T: Element>(&self, data: &mut [T], op: ReduceOp) -> Result<(), CommError> {
        self.blocking(|mesh| mesh.allreduce(data, op))
    }

    /// Reduces `send` across all ranks into `recv` (same length).
    pub fn allreduce_into<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        if send.len() != recv.len() {
            return Err(CommError::Invalid(format!(
                "allreduce_into: send has {} elements, recv {}",
                send.len(),
                recv.len()
            )));
        }
        recv.copy_from_slice(send);
        self.allreduce(recv, op)
    }

    /// Reduces `data` across all ranks into `root`'s `data` (others' buffers are scratch).
    pub fn reduce<T: Element>(
        &self,
        data: &mut [T],
        op: ReduceOp,
        root: u32,
    ) -> Result<(), CommError> {
        self.blocking(|mesh| mesh.reduce(data, op, root))
    }

    /// Copies `root`'s `data` to every rank.
    pub fn broadcast<T: Element>(&self, data: &mut [T], root: u32) -> Result<(), CommError> {
        self.blocking(|mesh| mesh.broadcast(data, root))
    }

    /// Gathers every rank's `send` into `recv` (world size x `send.len()`), in rank order.
    pub fn allgather<T: Element>(&self, send: &[T], recv: &mut [T]) -> Result<(), CommError> {
        self.blocking(|mesh| mesh.allgather(send, recv))
    }

    /// Reduces `send` (world size x `recv.len()`) and leaves block `rank` in `recv`.
    pub fn reduce_scatter<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        self.blocking(|mesh| mesh.reduce_scatter(send, recv, op))
    }

    /// Returns when every rank has called it.
    pub fn barrier(&self) -> Result<(), CommError> {
        let mut token = [0u8];
        self.blocking(|mesh| mesh.allreduce(&mut token, ReduceOp::Max))
    }

    /// [`Communicator::allreduce`] on the worker thread; the buffer comes back in the handle.
    pub fn allreduce_async<T: Element>(&self, mut data: Vec<T>, op: ReduceOp) -> Handle<Vec<T>> {
        self.submit(move |mesh| mesh.allreduce(&mut data, op).map(|()| data))
    }

    /// [`Communicator::broadcast`] on the worker thread.
    pub fn broadcast_async<T: Element>(&self, mut data: Vec<T>, root: u32) -> Handle<Vec<T>> {
        self.submit(move |mesh| mesh.broadcast(&mut data, root).map(|()| data))
    }

    /// [`Communicator::reduce`] on the worker thread.
    pub fn reduce_async<T: Element>(
        &self,
        mut data: Vec<T>,
        op: ReduceOp,
        root: u32,
    ) -> Handle<Vec<T>> {
        self.submit(move |mesh| mesh.reduce(&mut data, op, root).map(|()| data))
    }

    /// [`Communicator::allgather`] on the worker thread; returns the gathered buffer.
    pub fn allgather_async<T: Element>(&self, send: Vec<T>) -> Handle<Vec<T>> {
        self.submit(move |mesh| {
            let mut recv = vec![T::zeroed(); send.len() * mesh.size as usize];
            mesh.allgather(&send, &mut recv).map(|()| recv)
        })
    }

    /// [`Communicator::reduce_scatter`] on the worker thread; returns this rank's block.
    pub fn reduce_scatter_async<T: Element>(&self, send: Vec<T>, op: ReduceOp) -> Handle<Vec<T>> {
        self.submit(move |mesh| {
            let mut recv = vec![T::zeroed(); send.len() / mesh.size.max(1) as usize];
            mesh.reduce_scatter(&send, &mut recv, op).map(|()| recv)
        })
    }

    /// [`Communicator::barrier`] on the worker thread.
    pub fn barrier_async(&self) -> Handle<()> {
        self.submit(|mesh| mesh.allreduce(&mut [0u8], ReduceOp::Max))
    }
}

impl Drop for Communicator {
    fn drop(&mut self) {
        // Closing the queue ends the worker thread after the jobs already submitted.
        if let Ok(mut queue) = self.queue.lock() {
            queue.take();
        }
    }
}

/// Whether this rank can offer RDMA links under `transport`, or why not.
fn rdma_available(transport: Transport) -> Result<(), String> {
    if matches!(transport, Transport::Tcp | Transport::TcpSlots) {
        return Err("COHORT_TRANSPORT asks for TCP".to_owned());
    }
    #[cfg(feature = "rdma")]
    {
        match crate::link::rdma::probe() {
            crate::link::rdma::Availability::None(why) => Err(why),
            crate::link::rdma::Availability::Devices(_) => Ok(()),
        }
    }
    #[cfg(not(feature = "rdma"))]
    {
        Err("this build has no RDMA support (cargo feature `rdma`)".to_owned())
    }
}

/// What a link to a peer on another machine (or over TCP by request) is made of.
#[derive(Debug, Clone, Copy)]
enum LinkKind {
    /// TCP, over every stream.
    Tcp,
    /// The slot protocol over the first stream.
    Slots,
    /// RDMA verbs agreed over the one stream (kept to watch the peer), else TCP over it
    /// unless `required`.
    Rdma {
        ip: std::net::IpAddr,
        required: bool,
        deadline: Instant,
    },
}

/// A peer over `streams` as `kind` says; with the reason it uses TCP where RDMA was tried.
fn remote_peer(
    mut streams: Vec<TcpStream>,
    rank: u32,
    host: &str,
    kind: LinkKind,
) -> Result<(Peer, Option<String>), CommError> {
    let peer = |link: Box<dyn Link>| Peer {
        rank,
        host: host.to_owned(),
        link,
    };
    let mut because = None;
    if let LinkKind::Rdma {
        ip,
        required,
        deadline,
    } = kind
    {
        if streams.len() != 1 {
            return Err(CommError::io(
                "connecting a peer",
                std::io::ErrorKind::InvalidInput.into(),
            ));
        }
        match rdma_link(&mut streams, ip, deadline) {
            Ok(Ok(link)) => return Ok((peer(link), None)),
            Ok(Err(why)) if !required => {
                because = Some(format!("RDMA to rank {rank} on {host} failed ({why})"));
            }
            Ok(Err(why)) => {
                return Err(CommError::PeerGone {
                    rank,
                    host: host.to_owned(),
                    detail: format!("COHORT_TRANSPORT=rdma, but the RDMA link failed: {why}"),
                })
            }
            Err(e) => {
                return Err(CommError::PeerGone {
                    rank,
                    host: host.to_owned(),
                    detail: format!("agreeing on RDMA: {e}"),
                })
            }
        }
    }
    if let LinkKind::Slots = kind {
        let stream = streams.into_iter().next().ok_or_else(|| {
            CommError::io("connecting a peer", std::io::ErrorKind::NotConnected.into())
        })?;
        let wire = TcpWire::new(stream, SLOTS, SLOT_SIZE)
            .map_err(|e| CommError::io("configuring a TCP link", e))?;
        return Ok((
            peer(Box::new(SlotLink::new(wire, SLOTS, SLOT_SIZE))),
            because,
        ));
    }
    let mut links = streams
        .into_iter()
        .map(TcpLink::new)
        .collect::<std::io::Result<Vec<TcpLink>>>()
        .map_err(|e| CommError::io("configuring a TCP link", e))?;
    let link: Box<dyn Link> = if links.len() == 1 {
        Box::new(links.remove(0))
    } else {
        Box::new(StripedLink::new(links))
    };
    Ok((peer(link), because))
}

/// Agrees on an RDMA link over the one stream in `streams`, which the link then keeps (to
/// watch the peer); on `Ok(Err(why))` the stream is left for TCP.
#[cfg(feature = "rdma")]
fn rdma_link(
    streams: &mut Vec<TcpStream>,
    ip: std::net::IpAddr,
    deadline: Instant,
) -> std::io::Result<Result<Box<dyn Link>, String>> {
    let setup = crate::link::rdma::VerbsSetup::open(ip, SLOTS, SLOT_SIZE);
    match crate::link::negotiate::agree(&mut streams[0], setup, deadline)? {
        Ok(mut wire) => {
            wire.attach(streams.remove(0))?;
            Ok(Ok(Box::new(SlotLink::new(wire, SLOTS, SLOT_SIZE))))
        }
        Err(why) => Ok(Err(why)),
    }
}

/// Never reached: without the `rdma` feature no rank offers RDMA.
#[cfg(not(feature = "rdma"))]
fn rdma_link(
    _streams: &mut Vec<TcpStream>,
    _ip: std::net::IpAddr,
    _deadline: Instant,
) -> std::io::Result<Result<Box<dyn Link>, String>> {
    Ok(Err("this build has no RDMA support".to_owned()))
}

/// Reads the (index, count) a connecting peer sends after the handshake.
fn stream_header(stream: &mut TcpStream, deadline: Instant) -> std::io::Result<(usize, usize)> {
    let left = deadline.saturating_duration_since(Instant::now());
    stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
    let mut header = [0u8; 2];
    stream.read_exact(&mut header)?;
    let (index, count) = (usize::from(header[0]), usize::from(header[1]));
    if count == 0 || count > MAX_TCP_STREAMS || index >= count {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("stream {index} of {count}"),
        ));
    }
    Ok((index, count))
}

/// Streams per peer when not asked: one per 25 Gb/s of the interface that carries `ip` (one
/// stream rarely fills a fast NIC: it is bound to one core and one NIC queue), at most 8;
/// one where the speed is unknown (loopback, virtual interfaces).
fn auto_tcp_streams(ip: std::net::IpAddr) -> usize {
    let mbits = crate::link::interface_of(ip)
        .and_then(|name| std::fs::read_to_string(format!("/sys/class/net/{name}/speed")).ok())
        .and_then(|text| text.trim().parse::<i64>().ok())
        .unwrap_or(0);
    streams_for_speed(mbits)
}

/// One stream per 25 Gb/s, at least one, at most 8 (`mbits` as sysfs gives it; -1 unknown).
fn streams_for_speed(mbits: i64) -> usize {
    usize::try_from(mbits / 25_000).unwrap_or(0).clamp(1, 8)
}

fn connect_with_retry(address: SocketAddr, deadline: Instant) -> std::io::Result<TcpStream> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match TcpStream::connect_timeout(
            &address,
            left.min(Duration::from_secs(1))
                .max(Duration::from_millis(1)),
        ) {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_follow_the_interface_speed() {
        assert_eq!(streams_for_speed(-1), 1, "unknown");
        assert_eq!(streams_for_speed(10_000), 1);
        assert_eq!(streams_for_speed(25_000), 1);
        assert_eq!(streams_for_speed(100_000), 4);
        assert_eq!(streams_for_speed(400_000), 8);
        assert_eq!(
            auto_tcp_streams("127.0.0.1".parse().unwrap()),
            1,
            "loopback"
        );
    }

    #[test]
    fn a_bad_stream_header_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        for (header, ok) in [
            ([0u8, 1u8], true),
            ([2, 2], false),
            ([0, 0], false),
            ([0, 17], false),
        ] {
            let mut client = TcpStream::connect(address).unwrap();
            client.write_all(&header).unwrap();
            let (mut server, _) = listener.accept().unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            assert_eq!(
                stream_header(&mut server, deadline).is_ok(),
                ok,
                "{header:?}"
            );
        }
    }

    #[test]
    fn a_jobs_leftover_rings_are_removed_and_nothing_else() {
        let dir = shm_dir();
        let tag = job_tag(b"secret-of-this-test", "127.0.0.1:1");
        let mine = shm::ring_path(&dir, &tag, 9, 8);
        let other = shm::ring_path(&dir, &job_tag(b"another-job", "127.0.0.1:1"), 9, 8);
        std::fs::write(&mine, b"x").unwrap();
        std::fs::write(&other, b"x").unwrap();
        assert_eq!(remove_job_shm(b"secret-of-this-test", "127.0.0.1:1"), 1);
        assert!(!mine.exists());
        assert!(other.exists());
        std::fs::remove_file(other).unwrap();
    }
}
