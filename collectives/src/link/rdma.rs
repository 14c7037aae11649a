//! RDMA verbs, through `sideway` (which loads libibverbs at run time, so a binary built with
//! the `rdma` feature still runs on nodes without rdma-core).
//!
//! - [`probe`]: enumeration, with "no device" reported cleanly whatever the reason (no
//!   libibverbs, a kernel without InfiniBand support where `ibv_get_device_list` fails with
//!   ENOSYS, or simply no adapter).
//! - [`VerbsSetup`] and [`RdmaWire`]: the data path. Each pair of ranks gets one RC queue pair;
//!   each side registers a ring of receive slots (remote write) and a staging ring of the same
//!   shape, and carries the slot protocol of `link::slots` (chunking, credits, order) as RDMA
//!   writes with immediate: a chunk is copied into its staging slot and written into the
//!   peer's slot of the same number, its length in the immediate; a receive completion says
//!   it is there. Credits go back as zero-length writes with immediate. The queue pairs'
//!   details are exchanged over the authenticated TCP connection (`link::negotiate`), which
//!   stays open to notice a dead peer at once (the QP would notice only after its retries).
//!
//! Each link opens its own device context and registers 2 x 16 x 256 KiB = 8 MiB of locked
//! memory; where agreeing fails, the pair goes on over that one TCP connection (not striped).

#![allow(unsafe_code)]

use cohort_proto::env as vars;
use std::collections::VecDeque;
use std::io::Read;
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;

use sideway::ibverbs::address::{AddressHandleAttribute, Gid};
use sideway::ibverbs::completion::{
    BasicCompletionQueue, GenericCompletionQueue, WorkCompletionStatus,
};
use sideway::ibverbs::device::{DeviceInfo, DeviceList};
use sideway::ibverbs::device_context::{DeviceContext, LinkLayer, Mtu, PortState};
use sideway::ibverbs::memory_region::MemoryRegion;
use sideway::ibverbs::protection_domain::ProtectionDomain;
use sideway::ibverbs::queue_pair::{
    BasicQueuePair, PostSendGuard, QueuePair, QueuePairAttribute, QueuePairState,
    SetScatterGatherEntry, WorkRequestFlags,
};
use sideway::ibverbs::AccessFlags;

use super::negotiate::Setup;
use super::slots::Wire;

/// What the node offers for RDMA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Verbs devices by name (`mlx5_0`, `efa_0`).
    Devices(Vec<String>),
    /// None, and why.
    None(String),
}

/// Lists this node's verbs devices.
pub fn probe() -> Availability {
    match DeviceList::new() {
        Ok(list) => {
            let names: Vec<String> = list.iter().map(|device| device.name()).collect();
            if names.is_empty() {
                Availability::None("no RDMA device on this node".into())
            } else {
                Availability::Devices(names)
            }
        }
        Err(e) => {
            let cause =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string);
            Availability::None(format!(
                "no RDMA device on this node (ibv_get_device_list: {cause})"
            ))
        }
    }
}

/// `ibv_port_attr.flags`: the port needs a global route header on every packet.
const GRH_REQUIRED: u8 = 1 << 1;

/// Work request ids: a data write is its slot's number; these are the others.
const CREDIT_WR: u64 = u64::MAX;
const RECV_WR: u64 = u64::MAX - 1;
/// Extra send work requests beyond one per slot (credit returns).
const SEND_EXTRA: usize = 8;

/// One side's queue pair and registered rings, ready to connect to a peer's.
pub(crate) struct VerbsSetup {
    wire: RdmaWire,
    port: u8,
    gid_index: u8,
    global: bool,
    mtu: Mtu,
    lid: u16,
    gid: Gid,
    psn: u32,
}

/// A queue pair's details as the peer needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QpInfo {
    lid: u16,
    qpn: u32,
    psn: u32,
    gid: [u8; 16],
    addr: u64,
    rkey: u32,
    slots: u32,
    slot_size: u32,
    mtu: u32,
}

impl QpInfo {
    const LEN: usize = 2 + 4 + 4 + 16 + 8 + 4 + 4 + 4 + 4;

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(&self.lid.to_le_bytes());
        out.extend_from_slice(&self.qpn.to_le_bytes());
        out.extend_from_slice(&self.psn.to_le_bytes());
        out.extend_from_slice(&self.gid);
        out.extend_from_slice(&self.addr.to_le_bytes());
        out.extend_from_slice(&self.rkey.to_le_bytes());
        out.extend_from_slice(&self.slots.to_le_bytes());
        out.extend_from_slice(&self.slot_size.to_le_bytes());
        out.extend_from_slice(&self.mtu.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<QpInfo> {
        if bytes.len() != Self::LEN {
            return None;
        }
        let mut at = 0;
        let mut take = |n: usize| {
            let part = &bytes[at..at + n];
            at += n;
            part
        };
        let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or_default());
        Some(QpInfo {
            lid: u16::from_le_bytes(take(2).try_into().ok()?),
            qpn: u32_of(take(4)),
            psn: u32_of(take(4)),
            gid: take(16).try_into().ok()?,
            addr: u64::from_le_bytes(take(8).try_into().ok()?),
            rkey: u32_of(take(4)),
            slots: u32_of(take(4)),
            slot_size: u32_of(take(4)),
            mtu: u32_of(take(4)),
        })
    }
}

fn mtu_code(mtu: Mtu) -> u32 {
    match mtu {
        Mtu::Mtu256 => 256,
        Mtu::Mtu512 => 512,
        Mtu::Mtu1024 => 1024,
        Mtu::Mtu2048 => 2048,
        Mtu::Mtu4096 => 4096,
    }
}

fn mtu_of(bytes: u32) -> Mtu {
    match bytes {
        0..=256 => Mtu::Mtu256,
        257..=512 => Mtu::Mtu512,
        513..=1024 => Mtu::Mtu1024,
        1025..=2048 => Mtu::Mtu2048,
        _ => Mtu::Mtu4096,
    }
}

/// The device and port to use: `COHORT_RDMA_DEVICE` (`name` or `name:port`) when set, else
/// the device behind the network interface that holds `ip` (the rank's NIC in the plan), else
/// the first device with an active port.
fn choose_device(ip: IpAddr) -> Result<(String, u8), String> {
    if let Ok(text) = std::env::var(vars::RDMA_DEVICE) {
        let (name, port) = text.split_once(':').unwrap_or((text.as_str(), "1"));
        let port = port
            .parse::<u8>()
            .map_err(|_| format!("COHORT_RDMA_DEVICE={text:?}: the port must be a number"))?;
        return Ok((name.to_owned(), port));
    }
    let interface = super::interface_of(ip);
    let class = std::path::Path::new("/sys/class/infiniband");
    let mut devices: Vec<String> = std::fs::read_dir(class)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    devices.sort();
    if let Some(interface) = &interface {
        for device in &devices {
            if class
                .join(device)
                .join("device/net")
                .join(interface)
                .exists()
            {
                return Ok((device.clone(), 1));
            }
        }
    }
    for device in &devices {
        let active = std::fs::read_to_string(class.join(device).join("ports/1/state"))
            .is_ok_and(|state| state.contains("ACTIVE"));
        if active {
            return Ok((device.clone(), 1));
        }
    }
    Err(match devices.first() {
        Some(_) => format!("no RDMA device has an active port ({})", devices.join(", ")),
        None => "no RDMA device on this node".to_owned(),
    })
}

/// `ibv_query_gid_type`'s value for a RoCE v2 GID (the sysfs numbering, not `GidType`'s).
const GID_TYPE_SYSFS_ROCE_V2: u32 = 1;

/// The GID index to address the peer with on an Ethernet (RoCE) port: a RoCE v2 GID holding
/// `ip` (IPv4-mapped), else any RoCE v2 GID, else 0.
fn choose_gid(ctx: &DeviceContext, port: u8, table_len: i32, ip: IpAddr) -> u8 {
    let want: [u8; 16] = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    let mut any_v2 = None;
    let last = u8::try_from(table_len.clamp(1, 256) - 1).unwrap_or(u8::MAX);
    for index in 0..=last {
        let Ok(gid) = ctx.query_gid(port, u32::from(index)) else {
            continue;
        };
        if gid.is_zero() {
            continue;
        }
        let v2 = ctx
            .query_gid_type(port, u32::from(index))
            .is_ok_and(|t| t == GID_TYPE_SYSFS_ROCE_V2);
        if v2 && gid.raw == want {
            return index;
        }
        if v2 && any_v2.is_none() {
            any_v2 = Some(index);
        }
    }
    any_v2.unwrap_or(0)
}

/// A GID as an address: IPv4 where it holds one (IPv4-mapped), else IPv6.
fn gid_text(raw: [u8; 16]) -> String {
    let v6 = std::net::Ipv6Addr::from(raw);
    v6.to_ipv4_mapped()
        .map_or_else(|| v6.to_string(), |v4| v4.to_string())
}

/// Why verbs are not used where sideway panicked on a value from the driver it does not know.
const UNKNOWN_VALUE: &str = "the verbs library returned a value this build does not know";

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl VerbsSetup {
    /// Opens the device for the rank whose NIC holds `ip`, creates a queue pair (moved to
    /// INIT) and registers `slots` receive and staging slots of `slot_size` bytes.
    pub(crate) fn open(ip: IpAddr, slots: usize, slot_size: usize) -> Result<VerbsSetup, String> {
        // sideway turns unknown enum values from the driver into panics; a driver this build
        // does not know becomes a reason to use TCP instead.
        std::panic::catch_unwind(|| Self::open_inner(ip, slots, slot_size))
            .unwrap_or_else(|_| Err(UNKNOWN_VALUE.to_owned()))
    }

    fn open_inner(ip: IpAddr, slots: usize, slot_size: usize) -> Result<VerbsSetup, String> {
        let (name, port) = choose_device(ip)?;
        let list = DeviceList::new().map_err(|e| err("ibv_get_device_list", e))?;
        let device = list
            .iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| format!("RDMA device {name} not found"))?;
        let ctx = device
            .open()
            .map_err(|e| err(&format!("opening {name}"), e))?;
        let port_attr = ctx
            .query_port(port)
            .map_err(|e| err(&format!("{name} port {port}"), e))?;
        if port_attr.port_state() != PortState::Active {
            return Err(format!("{name} port {port} is not active"));
        }
        // RoCE addresses by GID; InfiniBand by LID, with a GRH only where the port asks.
        let global = port_attr.link_layer() == LinkLayer::Ethernet
            || port_attr.attr.flags & GRH_REQUIRED != 0;
        let gid_index = if global {
            choose_gid(&ctx, port, port_attr.gid_tbl_len(), ip)
        } else {
            0
        };
        let gid = ctx
            .query_gid(port, u32::from(gid_index))
            .unwrap_or_default();
        let route = if global {
            let v2 = ctx
                .query_gid_type(port, u32::from(gid_index))
                .is_ok_and(|t| t == GID_TYPE_SYSFS_ROCE_V2);
            format!(
                "rdma {name} port {port} GID {gid_index} {} ({})",
                gid_text(gid.raw),
                if v2 { "RoCE v2" } else { "RoCE v1 or IB" }
            )
        } else {
            format!("rdma {name} port {port} LID {}", port_attr.lid())
        };
        let pd = ctx
            .alloc_pd()
            .map_err(|e| err("allocating a protection domain", e))?;
        let max_send = slots + SEND_EXTRA;
        let recv_depth = 2 * slots + SEND_EXTRA;
        let cqe = u32::try_from(max_send + recv_depth).unwrap_or(u32::MAX);
        let cq = ctx
            .create_cq_builder()
            .setup_cqe(cqe)
            .build()
            .map_err(|e| err("creating a completion queue", e))?;
        let mut qp = pd
            .create_qp_builder()
            .setup_send_cq(GenericCompletionQueue::from(Arc::clone(&cq)))
            .setup_recv_cq(GenericCompletionQueue::from(Arc::clone(&cq)))
            .setup_max_send_wr(u32::try_from(max_send).unwrap_or(u32::MAX))
            .setup_max_recv_wr(u32::try_from(recv_depth).unwrap_or(u32::MAX))
            .setup_max_send_sge(1)
            .setup_max_recv_sge(1)
            .build()
            .map_err(|e| err("creating a queue pair", e))?;
        let mut attr = QueuePairAttribute::new();
        attr.setup_state(QueuePairState::Init)
            .setup_pkey_index(0)
            .setup_port(port)
            .setup_access_flags(AccessFlags::LocalWrite | AccessFlags::RemoteWrite);
        qp.modify(&attr).map_err(|e| err("queue pair to INIT", e))?;

        let recv_buf = vec![0u64; slots * slot_size / 8];
        let send_buf = vec![0u64; slots * slot_size / 8];
        // SAFETY: both buffers are heap allocations of `slots * slot_size` bytes owned by the
        // wire built below, which deregisters the regions (drops them) before the buffers: the
        // fields are declared in that order. The heap storage does not move when the wire does.
        let (recv_mr, send_mr) = unsafe {
            (
                pd.reg_mr(
                    recv_buf.as_ptr() as usize,
                    slots * slot_size,
                    AccessFlags::LocalWrite | AccessFlags::RemoteWrite,
                )
                .map_err(|e| {
                    err(
                        "registering the receive slots (is `ulimit -l` large enough?)",
                        e,
                    )
                })?,
                pd.reg_mr(
                    send_buf.as_ptr() as usize,
                    slots * slot_size,
                    AccessFlags::LocalWrite,
                )
                .map_err(|e| {
                    err(
                        "registering the staging slots (is `ulimit -l` large enough?)",
                        e,
                    )
                })?,
            )
        };
        let mut psn = [0u8; 4];
        getrandom::fill(&mut psn).map_err(|e| err("a packet sequence number", e))?;
        let psn = u32::from_le_bytes(psn) & 0x00ff_ffff;
        let mut wire = RdmaWire {
            qp,
            cq,
            recv_mr,
            send_mr,
            recv_buf,
            send_buf,
            _pd: pd,
            _ctx: Arc::clone(&ctx),
            remote_addr: 0,
            remote_rkey: 0,
            slots,
            slot_size,
            staging_busy: vec![false; slots],
            sends: 0,
            max_send,
            arrivals: VecDeque::new(),
            failure: None,
            stream: None,
            closed: false,
            device: name,
            route,
        };
        for _ in 0..recv_depth {
            wire.post_recv().map_err(|e| err("posting receives", e))?;
        }
        Ok(VerbsSetup {
            wire,
            port,
            gid_index,
            global,
            mtu: port_attr.active_mtu(),
            lid: port_attr.lid(),
            gid,
            psn,
        })
    }

    fn info(&self) -> QpInfo {
        QpInfo {
            lid: self.lid,
            qpn: self.wire.qp.qp_number(),
            psn: self.psn,
            gid: self.gid.raw,
            addr: self.wire.recv_buf.as_ptr() as u64,
            rkey: self.wire.recv_mr.rkey(),
            slots: u32::try_from(self.wire.slots).unwrap_or(0),
            slot_size: u32::try_from(self.wire.slot_size).unwrap_or(0),
            mtu: mtu_code(self.mtu),
        }
    }

    fn connect_inner(mut self, peer: &[u8]) -> Result<RdmaWire, String> {
        let peer = QpInfo::decode(peer).ok_or("the peer's queue pair details are malformed")?;
        if (peer.slots as usize, peer.slot_size as usize) != (self.wire.slots, self.wire.slot_size)
        {
            return Err(format!(
                "the peer has {} slots of {} bytes, this side {} of {}",
                peer.slots, peer.slot_size, self.wire.slots, self.wire.slot_size
            ));
        }
        let mut address = AddressHandleAttribute::new();
        address
            .setup_dest_lid(peer.lid)
            .setup_port(self.port)
            .setup_service_level(0);
        if self.global {
            address
                .setup_grh_dest_gid(&Gid { raw: peer.gid })
                .setup_grh_src_gid_index(self.gid_index)
                .setup_grh_hop_limit(64);
        }
        let mut attr = QueuePairAttribute::new();
        attr.setup_state(QueuePairState::ReadyToReceive)
            .setup_path_mtu(mtu_of(peer.mtu.min(mtu_code(self.mtu))))
            .setup_dest_qp_num(peer.qpn)
            .setup_rq_psn(peer.psn)
            .setup_max_dest_read_atomic(0)
            .setup_min_rnr_timer(12)
            .setup_address_vector(&address);
        self.wire
            .qp
            .modify(&attr)
            .map_err(|e| err("queue pair to RTR", e))?;
        let mut attr = QueuePairAttribute::new();
        // Timeout 14: 67 ms per try, 7 tries: a vanished peer fails a write within a second.
        attr.setup_state(QueuePairState::ReadyToSend)
            .setup_sq_psn(self.psn)
            .setup_timeout(14)
            .setup_retry_cnt(7)
            .setup_rnr_retry(7)
            .setup_max_read_atomic(0);
        self.wire
            .qp
            .modify(&attr)
            .map_err(|e| err("queue pair to RTS", e))?;
        self.wire.remote_addr = peer.addr;
        self.wire.remote_rkey = peer.rkey;
        Ok(self.wire)
    }
}

impl Setup for VerbsSetup {
    type Link = RdmaWire;

    fn offer(&self) -> Vec<u8> {
        self.info().encode()
    }

    fn connect(self, peer: &[u8]) -> Result<RdmaWire, String> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.connect_inner(peer)))
            .unwrap_or_else(|_| Err(UNKNOWN_VALUE.to_owned()))
    }

    fn check(wire: &mut RdmaWire) -> Result<(), String> {
        wire.ping()
    }
}

/// The slot protocol's wire over an RC queue pair (see the module's documentation).
///
/// Fields drop in order: the queue pair first, then the regions, then their buffers.
pub(crate) struct RdmaWire {
    qp: BasicQueuePair,
    cq: Arc<BasicCompletionQueue>,
    recv_mr: Arc<MemoryRegion>,
    send_mr: Arc<MemoryRegion>,
    recv_buf: Vec<u64>,
    send_buf: Vec<u64>,
    _pd: Arc<ProtectionDomain>,
    _ctx: Arc<DeviceContext>,
    remote_addr: u64,
    remote_rkey: u32,
    slots: usize,
    slot_size: usize,
    /// Staging slots whose write has not completed.
    staging_busy: Vec<bool>,
    /// Send work requests not yet completed.
    sends: usize,
    max_send: usize,
    arrivals: VecDeque<u32>,
    /// The first failed work completion, which breaks the queue pair for good.
    failure: Option<String>,
    /// The TCP connection the queue pairs were agreed over: its end is the peer's.
    stream: Option<TcpStream>,
    closed: bool,
    device: String,
    /// What `route()` shows: device, port, and the GID (or LID) this side uses.
    route: String,
}

impl std::fmt::Debug for RdmaWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaWire")
            .field("device", &self.device)
            .field("qpn", &self.qp.qp_number())
            .field("sends", &self.sends)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

fn status_name(status: u32) -> String {
    use WorkCompletionStatus as S;
    let known = [
        (S::LocalLengthError, "local length error"),
        (S::LocalProtectionError, "local protection error"),
        (
            S::WorkRequestFlushedError,
            "flushed (the queue pair is in error)",
        ),
        (S::RemoteAccessError, "remote access error"),
        (S::RemoteOperationError, "remote operation error"),
        (
            S::RetryCounterExceededError,
            "retries exceeded (the peer does not answer)",
        ),
        (
            S::ResponderNotReadyRetryCounterExceededError,
            "receiver-not-ready retries exceeded",
        ),
        (S::FatalError, "fatal error"),
    ];
    known.iter().find(|(s, _)| *s as u32 == status).map_or_else(
        || format!("status {status}"),
        |(_, name)| (*name).to_owned(),
    )
}

/// The immediate of the check each side writes once connected: returns no credits.
const PING: u32 = 1 << 31;
/// How long the check waits for its write to complete and for the peer's to arrive.
const PING_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl RdmaWire {
    /// Writes an empty immediate to the peer and waits for it to complete and for the
    /// peer's own to arrive: proves the fabric carries this queue pair's traffic both ways.
    fn ping(&mut self) -> Result<(), String> {
        let until = std::time::Instant::now() + PING_WAIT;
        if !self.try_post(0, &[], PING).map_err(|e| e.to_string())? {
            return Err("the send queue is full before the first write".into());
        }
        loop {
            self.progress().map_err(|e| e.to_string())?;
            if self.sends == 0 {
                if let Some(pos) = self.arrivals.iter().position(|&imm| imm == PING) {
                    self.arrivals.remove(pos);
                    return Ok(());
                }
            }
            if std::time::Instant::now() >= until {
                return Err(format!(
                    "no RDMA traffic with the peer within {} s ({})",
                    PING_WAIT.as_secs(),
                    if self.sends == 0 {
                        "its write never arrived"
                    } else {
                        "this side's write never completed"
                    }
                ));
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    }

    /// Keeps the agreed TCP connection, to see the peer go.
    pub(crate) fn attach(&mut self, stream: TcpStream) -> std::io::Result<()> {
        super::tcp::watch_peer_host(&stream)?;
        stream.set_nonblocking(true)?;
        self.stream = Some(stream);
        Ok(())
    }

    fn post_recv(&mut self) -> std::io::Result<()> {
        let mut guard = self.qp.start_post_recv();
        // No scatter list: writes with immediate land in the slots, not in receive buffers.
        let _ = guard.construct_wr(RECV_WR);
        guard.post().map_err(std::io::Error::other)
    }

    /// Takes completions: arrivals in order, finished writes free their staging slots.
    fn progress(&mut self) -> std::io::Result<()> {
        if let Some(failure) = &self.failure {
            return Err(std::io::Error::other(failure.clone()));
        }
        let mut done: Vec<(u64, u32, u32)> = Vec::new();
        match self.cq.start_poll() {
            Ok(poller) => {
                for wc in poller {
                    done.push((wc.wr_id(), wc.status(), wc.imm_data()));
                }
            }
            Err(sideway::ibverbs::completion::PollCompletionQueueError::CompletionQueueEmpty) => {}
            Err(e) => return Err(std::io::Error::other(format!("polling completions: {e}"))),
        }
        for (id, status, imm) in done {
            if status != WorkCompletionStatus::Success as u32 {
                let what = if id == RECV_WR {
                    "a receive"
                } else {
                    "a write"
                };
                let failure = format!(
                    "RDMA on {}: {what} failed: {}",
                    self.device,
                    status_name(status)
                );
                self.failure = Some(failure.clone());
                return Err(std::io::Error::other(failure));
            }
            match id {
                RECV_WR => {
                    self.arrivals.push_back(u32::from_be(imm));
                    if let Err(e) = self.post_recv() {
                        // Completions already taken would be lost: the link is over.
                        let failure = format!("RDMA on {}: posting a receive: {e}", self.device);
                        self.failure = Some(failure.clone());
                        return Err(std::io::Error::other(failure));
                    }
                }
                CREDIT_WR => self.sends = self.sends.saturating_sub(1),
                slot => {
                    if let Some(busy) = usize::try_from(slot)
                        .ok()
                        .and_then(|s| self.staging_busy.get_mut(s))
                    {
                        *busy = false;
                    }
                    self.sends = self.sends.saturating_sub(1);
                }
            }
        }
        Ok(())
    }
}

impl Wire for RdmaWire {
    fn try_post(&mut self, slot: usize, data: &[u8], imm: u32) -> std::io::Result<bool> {
        self.progress()?;
        if self.sends >= self.max_send || (!data.is_empty() && self.staging_busy[slot]) {
            return Ok(false);
        }
        let offset = slot * self.slot_size;
        let remote = self.remote_addr + offset as u64;
        if data.is_empty() {
            let mut guard = self.qp.start_post_send();
            let _ = guard
                .construct_wr(CREDIT_WR, WorkRequestFlags::Signaled)
                .setup_write_imm(self.remote_rkey, self.remote_addr, imm.to_be());
            guard.post().map_err(std::io::Error::other)?;
        } else {
            let staging: &mut [u8] = bytemuck::cast_slice_mut(&mut self.send_buf);
            staging[offset..offset + data.len()].copy_from_slice(data);
            let local = staging[offset..].as_ptr() as u64;
            let lkey = self.send_mr.lkey();
            let mut guard = self.qp.start_post_send();
            let handle = guard
                .construct_wr(slot as u64, WorkRequestFlags::Signaled)
                .setup_write_imm(self.remote_rkey, remote, imm.to_be());
            // SAFETY: the staging slot lies in `send_buf`, registered as `send_mr`, and is not
            // written again until this write's completion clears `staging_busy[slot]`.
            unsafe {
                handle.setup_sge(lkey, local, u32::try_from(data.len()).unwrap_or(u32::MAX));
            }
            guard.post().map_err(std::io::Error::other)?;
            self.staging_busy[slot] = true;
        }
        self.sends += 1;
        Ok(true)
    }

    fn try_arrival(&mut self) -> std::io::Result<Option<u32>> {
        if self.arrivals.is_empty() {
            self.progress()?;
        }
        Ok(self.arrivals.pop_front())
    }

    fn slot(&self, index: usize) -> &[u8] {
        let bytes: &[u8] = bytemuck::cast_slice(&self.recv_buf);
        &bytes[index * self.slot_size..(index + 1) * self.slot_size]
    }

    fn poll_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }

    fn peer_alive(&mut self) -> Result<(), String> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        if !self.closed {
            if let Some(stream) = &mut self.stream {
                let mut byte = [0u8; 1];
                match stream.read(&mut byte) {
                    Ok(0) => self.closed = true,
                    Ok(_) => return Err("sent unexpected bytes on its connection".into()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        if self.closed {
            // Its last writes completed before it closed: what arrived is still to be read.
            if self.progress().is_ok() && !self.arrivals.is_empty() {
                return Ok(());
            }
            return Err("its connection was closed".into());
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "rdma"
    }

    fn route(&self) -> String {
        self.route.clone()
    }
}

/// How long closing waits for posted writes to complete and for the peer to close too.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl Drop for RdmaWire {
    /// Closes gracefully: waits for this side's writes to complete (an operation completes
    /// once they are posted), then closes the TCP connection and waits for the peer to close
    /// its own, so that neither side destroys its queue pair while the other still writes.
    fn drop(&mut self) {
        let until = std::time::Instant::now() + CLOSE_GRACE;
        while self.sends > 0 && self.failure.is_none() && std::time::Instant::now() < until {
            if self.progress().is_err() {
                break;
            }
            std::thread::yield_now();
        }
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut sink = [0u8; 64];
        while std::time::Instant::now() < until {
            match stream.read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Keep answering the peer's last writes while it finishes.
                    let _ = self.progress();
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the environment asks for it (`COHORT_TEST_RDMA=1`, on a node with an adapter),
    /// devices must be found; elsewhere the probe must answer "none" with a reason, and the
    /// test says it skipped the hardware check.
    #[test]
    fn probe_reports_devices_or_a_clean_none() {
        match (probe(), std::env::var("COHORT_TEST_RDMA").as_deref()) {
            (Availability::Devices(names), _) => {
                assert!(names.iter().all(|n| !n.is_empty()));
                eprintln!("RDMA devices: {names:?}");
            }
            (Availability::None(why), Ok("1")) => {
                panic!("COHORT_TEST_RDMA=1 but {why}");
            }
            (Availability::None(why), _) => {
                assert!(why.starts_with("no RDMA device"));
                // Written past the test harness's capture, so it shows when the test passes.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: RDMA hardware check (set COHORT_TEST_RDMA=1 on a node with an adapter): {why}"
                );
            }
        }
    }
}
