//! Connection set-up: the rendezvous through the store (rank 0 serves it), then a link to
//! every peer: shared-memory rings with the ranks on this machine, TCP (or RDMA verbs agreed
//! over TCP) with the others. Every connection proves the job secret, and everything is done
//! by one deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::auth::handshake;
use crate::engine::Peer;
use crate::error::{CommError, InitError};
use crate::link::shm::{self, ShmLink};
use crate::link::slots::{SlotLink, TcpWire};
use crate::link::tcp::{StripedLink, TcpLink};
use crate::link::Link;
use crate::options::{CommOptions, Transport, MAX_TCP_STREAMS};
use crate::store::{StoreClient, StoreServer};

/// Receive slots per peer of the slot protocol, and their size.
const SLOTS: usize = 16;
const SLOT_SIZE: usize = 256 << 10;

/// What each rank publishes in the store.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) boot_id: String,
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

/// What the set-up leaves: a link to every peer, what every rank published, and the store.
pub(crate) struct Connected {
    /// Links indexed by rank (`None` for this rank).
    pub(crate) peers: Vec<Option<Peer>>,
    /// What each rank published, indexed by rank.
    pub(crate) endpoints: Vec<Endpoint>,
    /// This rank's connection to the store, kept for diagnosis after a timeout.
    pub(crate) store: StoreClient,
    /// Ranks on this machine reached over shared memory (this one not included).
    pub(crate) same_host_peers: usize,
    /// The ring order: the plan's, or rank 0's through the store for a rank given only its
    /// node's share of the plan.
    pub(crate) ring: Vec<u32>,
}

/// Connects this rank to every other: rendezvous through the store, shared-memory rings with
/// the ranks on this machine, TCP (or RDMA verbs) with the others, all by `deadline`.
pub(crate) fn connect(options: &CommOptions, deadline: Instant) -> Result<Connected, InitError> {
    let mut rendezvous = Rendezvous::run(options, deadline)?;
    let mut peers: Vec<Option<Peer>> = (0..options.world_size).map(|_| None).collect();
    let same_host_peers = link_same_host(options, &mut rendezvous, &mut peers, deadline)?;
    let tcp_because = link_remote(options, &rendezvous, &mut peers, deadline)?;
    if options.rank == 0 {
        explain_tcp_between_hosts(&rendezvous, &peers, tcp_because);
    }
    Ok(Connected {
        peers,
        endpoints: rendezvous.endpoints,
        store: rendezvous.store,
        same_host_peers,
        ring: rendezvous.ring,
    })
}

/// The store key of the ring order's chunk count; chunk `i` is under `plan/ring/i`.
const RING_KEY: &str = "plan/ring";
/// Ranks per chunk of the ring order in the store (each below the store's field limit).
const RING_CHUNK: usize = 1 << 16;

/// The ring order this rank uses, and rank 0's publication of it: rank 0 publishes its plan's
/// first ring (the ranks in order when its plan has none) for ranks given a share of the plan
/// without rings, which read it; a rank whose plan has rings uses its own.
fn ring_order(
    options: &CommOptions,
    store: &mut StoreClient,
    deadline: Instant,
) -> Result<Vec<u32>, InitError> {
    let size = options.world_size;
    let own = options
        .plan
        .as_ref()
        .and_then(|plan| plan.rings.first().cloned());
    if options.rank == 0 {
        let ring = own.unwrap_or_else(|| (0..size).collect());
        let chunks: Vec<&[u32]> = ring.chunks(RING_CHUNK).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let bytes: Vec<u8> = chunk.iter().flat_map(|r| r.to_le_bytes()).collect();
            store.set(&format!("{RING_KEY}/{i}"), &bytes, deadline)?;
        }
        store.set(RING_KEY, &chunks.len().to_le_bytes(), deadline)?;
        return Ok(ring);
    }
    let share = options
        .plan
        .as_ref()
        .is_some_and(cohort_proto::plan::Plan::is_share);
    match own {
        Some(ring) => Ok(ring),
        None if !share => Ok((0..size).collect()),
        None => {
            let malformed = |what: &str| CommError::Store {
                address: options.store.clone(),
                detail: format!("rank 0 published a malformed ring order ({what})"),
            };
            let count = store.get(RING_KEY, deadline)?;
            let count =
                usize::from_le_bytes(count.try_into().map_err(|_| malformed("chunk count"))?);
            let mut ring = Vec::with_capacity(size as usize);
            for i in 0..count {
                let bytes = store.get(&format!("{RING_KEY}/{i}"), deadline)?;
                ring.extend(
                    bytes
                        .chunks_exact(4)
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
            }
            let mut seen = vec![false; size as usize];
            for &r in &ring {
                match seen.get_mut(r as usize) {
                    Some(slot) if !*slot => *slot = true,
                    _ => return Err(malformed("a rank twice or out of range").into()),
                }
            }
            if ring.len() != size as usize {
                return Err(malformed("not every rank").into());
            }
            Ok(ring)
        }
    }
}

/// The rendezvous: every rank has published its endpoint and read everyone's.
struct Rendezvous {
    store: StoreClient,
    /// Where higher ranks connect to this one.
    listener: TcpListener,
    me: Endpoint,
    endpoints: Vec<Endpoint>,
    /// Whether this rank offers RDMA, or why not.
    rdma_here: Result<(), String>,
    /// The ring order.
    ring: Vec<u32>,
}

impl Rendezvous {
    /// Serves the store on rank 0, listens on this rank's plan address, publishes this
    /// rank's endpoint and waits for every other's.
    fn run(options: &CommOptions, deadline: Instant) -> Result<Rendezvous, InitError> {
        let rank = options.rank;
        let my_plan = options.plan.as_ref().and_then(|plan| plan.rank(rank));
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
        let rdma_here = rdma_available(options.transport);
        if let (Transport::Rdma, Err(why)) = (options.transport, &rdma_here) {
            return Err(CommError::Invalid(format!("COHORT_TRANSPORT=rdma, but {why}")).into());
        }
        let me = Endpoint {
            host,
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            pid: i32::try_from(std::process::id()).unwrap_or(0),
            address: listener
                .local_addr()
                .map_err(|e| CommError::io("listener address", e))?,
            rdma: rdma_here.is_ok(),
        };
        let ring = ring_order(options, &mut store, deadline)?;
        store.set(&format!("endpoint/{rank}"), &me.encode(), deadline)?;
        let mut endpoints = Vec::with_capacity(options.world_size as usize);
        for peer in 0..options.world_size {
            let bytes = store.get(&format!("endpoint/{peer}"), deadline)?;
            let endpoint = Endpoint::decode(&bytes).ok_or_else(|| CommError::Store {
                address: options.store.clone(),
                detail: format!("rank {peer} published a malformed endpoint"),
            })?;
            endpoints.push(endpoint);
        }
        Ok(Rendezvous {
            store,
            listener,
            me,
            endpoints,
            rdma_here,
            ring,
        })
    }

    /// Whether `peer` runs on this machine (same host name and boot).
    fn same_machine(&self, peer: u32) -> bool {
        let endpoint = &self.endpoints[peer as usize];
        endpoint.host == self.me.host && endpoint.boot_id == self.me.boot_id
    }
}

/// Shared memory with the ranks on this machine (under `auto`): creates the rings this rank
/// reads, opens each pair once both exist, then unlinks the files (the mappings stay) so
/// nothing is left in /dev/shm. Returns how many peers it linked.
fn link_same_host(
    options: &CommOptions,
    rendezvous: &mut Rendezvous,
    peers: &mut [Option<Peer>],
    deadline: Instant,
) -> Result<usize, InitError> {
    let rank = options.rank;
    let local: Vec<u32> = (0..options.world_size)
        .filter(|&p| p != rank && options.transport == Transport::Auto)
        .filter(|&p| rendezvous.same_machine(p))
        .collect();
    let tag = job_tag(&options.secret, &options.store);
    let dir = shm_dir();
    let store = &mut rendezvous.store;
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
        let endpoint = &rendezvous.endpoints[peer as usize];
        let outbound = shm::ring_path(&dir, &tag, rank, peer);
        let inbound = shm::ring_path(&dir, &tag, peer, rank);
        let link = ShmLink::open(&outbound, &inbound, endpoint.pid)
            .map_err(|e| CommError::io(format!("opening {}", outbound.display()), e))?;
        peers[peer as usize] = Some(Peer {
            rank: peer,
            host: endpoint.host.clone(),
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
    Ok(local.len())
}

/// How this rank links to each peer not on shared memory.
struct RemotePolicy<'a> {
    options: &'a CommOptions,
    rendezvous: &'a Rendezvous,
    deadline: Instant,
}

impl RemotePolicy<'_> {
    /// RDMA to a peer: both ends offer it, and it is on another machine (or asked for).
    fn rdma_to(&self, peer: u32) -> bool {
        let me = &self.rendezvous.me;
        me.rdma
            && self.rendezvous.endpoints[peer as usize].rdma
            && (self.options.transport == Transport::Rdma || !self.rendezvous.same_machine(peer))
    }

    /// How many streams to open to `peer` (the connecting side picks).
    fn streams_to(&self, peer: u32) -> usize {
        match self.options.transport {
            _ if self.rdma_to(peer) => 1,
            Transport::TcpSlots => 1,
            _ => self
                .options
                .tcp_streams
                .unwrap_or_else(|| auto_tcp_streams(self.rendezvous.me.address.ip()))
                .clamp(1, MAX_TCP_STREAMS),
        }
    }

    fn link_kind(&self, peer: u32) -> LinkKind {
        if self.rdma_to(peer) {
            LinkKind::Rdma {
                ip: self.rendezvous.me.address.ip(),
                required: self.options.transport == Transport::Rdma,
                deadline: self.deadline,
            }
        } else if self.options.transport == Transport::TcpSlots {
            LinkKind::Slots
        } else {
            LinkKind::Tcp
        }
    }
}

/// TCP (or RDMA agreed over TCP) with every peer not yet linked: connects to lower ranks and
/// accepts higher ones; each connection proves the secret. Returns why some peer on another
/// machine is reached over TCP where RDMA was tried, if so.
fn link_remote(
    options: &CommOptions,
    rendezvous: &Rendezvous,
    peers: &mut [Option<Peer>],
    deadline: Instant,
) -> Result<Option<String>, InitError> {
    let rank = options.rank;
    let endpoints = &rendezvous.endpoints;
    let remote: Vec<u32> = (0..options.world_size)
        .filter(|&p| p != rank && peers[p as usize].is_none())
        .collect();
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
    let policy = RemotePolicy {
        options,
        rendezvous,
        deadline,
    };
    let mut tcp_because: Option<String> = None;
    for &peer in remote.iter().filter(|&&p| p < rank) {
        let endpoint = &endpoints[peer as usize];
        let connected =
            connect_streams(options, peer, endpoint, policy.streams_to(peer), deadline)?;
        let (link, why) = remote_peer(connected, peer, &endpoint.host, policy.link_kind(peer))?;
        tcp_because = tcp_because.or(why);
        peers[peer as usize] = Some(link);
    }
    let waiting: Vec<u32> = remote.iter().copied().filter(|&p| p > rank).collect();
    let why = accept_peers(options, rendezvous, &policy, waiting, peers, deadline)?;
    Ok(tcp_because.or(why))
}

/// Opens `streams` connections to the lower rank `peer`, each proving the secret and saying
/// which stream of how many it is.
fn connect_streams(
    options: &CommOptions,
    peer: u32,
    endpoint: &Endpoint,
    streams: usize,
    deadline: Instant,
) -> Result<Vec<TcpStream>, InitError> {
    let mut connected = Vec::with_capacity(streams);
    for index in 0..streams {
        let mut stream =
            connect_with_retry(endpoint.address, deadline).map_err(|e| CommError::PeerGone {
                rank: peer,
                host: endpoint.host.clone(),
                detail: format!("cannot connect to {}: {e}", endpoint.address),
            })?;
        let who = format!("rank {peer} at {}", endpoint.address);
        let id = handshake(
            &mut stream,
            &options.secret,
            options.rank,
            true,
            deadline,
            &who,
        )?;
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
    Ok(connected)
}

/// Accepts the streams of every higher rank in `waiting` on this rank's listener; refuses
/// (and reports) connections that fail the handshake or do not match, and fails at
/// `deadline` naming a rank that never came.
fn accept_peers(
    options: &CommOptions,
    rendezvous: &Rendezvous,
    policy: &RemotePolicy<'_>,
    mut waiting: Vec<u32>,
    peers: &mut [Option<Peer>],
    deadline: Instant,
) -> Result<Option<String>, InitError> {
    let rank = options.rank;
    let endpoints = &rendezvous.endpoints;
    let listener = &rendezvous.listener;
    let mut tcp_because = None;
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
                            let host = &endpoints[id as usize].host;
                            let (link, why) = remote_peer(streams, id, host, policy.link_kind(id))?;
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
    Ok(tcp_because)
}

/// Says once (rank 0) why ranks on different machines talk over TCP, where some do.
fn explain_tcp_between_hosts(
    rendezvous: &Rendezvous,
    peers: &[Option<Peer>],
    tcp_because: Option<String>,
) {
    let tcp_between_hosts = (0..rendezvous.endpoints.len()).any(|peer| {
        #[allow(clippy::cast_possible_truncation)] // a rank fits in u32
        let other_machine = !rendezvous.same_machine(peer as u32);
        other_machine
            && peers[peer]
                .as_ref()
                .is_some_and(|p| p.link.kind() != "rdma")
    });
    if tcp_between_hosts {
        let why = match (&rendezvous.rdma_here, tcp_because) {
            (Err(why), _) => why.clone(),
            (Ok(()), Some(why)) => why,
            (Ok(()), None) => "a peer has no RDMA device".to_owned(),
        };
        eprintln!("cohort: using TCP between hosts: {why}");
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
