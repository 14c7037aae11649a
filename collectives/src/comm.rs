//! The `Communicator`: a group of connected ranks and its operations, blocking on the
//! caller's thread or asynchronous on one worker thread, in submission order. What it is
//! made from is in `options`; how it connects, in `connect`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::algo::Mesh;
use crate::connect::{connect, Connected};
use crate::dtype::{Element, ReduceOp};
use crate::error::{CommError, InitError};
use crate::options::CommOptions;

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
    /// Each peer's rank and the route to it (`Link::route`).
    routes: Vec<(u32, String)>,
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
    /// host unless TCP is asked for, TCP otherwise), then a barrier.
    pub fn new(options: CommOptions) -> Result<Communicator, InitError> {
        options.check()?;
        let deadline = Instant::now() + options.timeout;
        let Connected {
            peers,
            endpoints,
            store,
            same_host_peers,
            ring,
        } = connect(&options, deadline)?;
        let (rank, size) = (options.rank, options.world_size);
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let machines: Vec<String> = endpoints
            .iter()
            .map(|e| format!("{}/{}", e.host, e.boot_id))
            .collect();
        let transports = peers
            .iter()
            .flatten()
            .map(|peer| peer.link.kind())
            .collect::<Vec<_>>();
        let routes = peers
            .iter()
            .flatten()
            .map(|peer| (peer.rank, peer.link.route()))
            .collect();
        let abort = Arc::new(AtomicBool::new(false));
        let mesh = Mesh {
            rank,
            size,
            any_tcp: transports.iter().any(|t| t.starts_with("tcp")),
            peers,
            hierarchy: crate::algo::Hierarchy::new(&ring, &machines, rank),
            ring,
            abort: Arc::clone(&abort),
            timeout: options.timeout,
            algorithm: options.algorithm,
            store: Some(store),
            hosts: endpoints.into_iter().map(|e| e.host).collect(),
            op_seq: 0,
            scratch: Vec::new(),
            spins: if same_host_peers + 1 > cores {
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
            routes,
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

    /// Each peer's rank and how this rank reaches it: `shm`, `tcp`, or `rdma` with the device,
    /// port and GID this side uses (e.g. `rdma rxe0 port 1 GID 1 10.0.0.1 (RoCE v2)`).
    pub fn routes(&self) -> &[(u32, String)] {
        &self.routes
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
