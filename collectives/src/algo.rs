//! The algorithms: ring reduce-scatter and allgather (large messages), recursive doubling
//! (small messages), a pipelined ring broadcast, and the operations built from them.
//!
//! Every reduced value is computed once, by one rank, in an order fixed by the ring or by rank
//! numbers (recursive doubling always combines the lower rank's side first), and then copied to
//! the others; so every rank ends with bit-identical results.

use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dtype::{Element, ReduceOp};
use crate::engine::{exchange, Incoming, OpCtx, Peer, Sink};
use crate::error::CommError;
use crate::store::StoreClient;

/// Which allreduce algorithm to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Chosen by the cost model from the message size, the world size and the transports.
    Auto,
    /// Ring reduce-scatter then allgather: bandwidth-optimal, 2(n-1) steps.
    Ring,
    /// Recursive doubling: log2(n) steps of whole-message exchanges, latency-optimal.
    RecursiveDoubling,
    /// Two levels (shared memory within a host, rails across hosts) whenever ranks span
    /// several hosts with the same number of ranks each; the ring otherwise.
    Hierarchical,
}

impl Algorithm {
    /// Parses `auto`, `ring`, `rd` / `recursive-doubling`, `hier` / `hierarchical` (the values
    /// of `COHORT_ALGO`).
    pub fn parse(text: &str) -> Option<Algorithm> {
        match text {
            "auto" => Some(Algorithm::Auto),
            "ring" => Some(Algorithm::Ring),
            "rd" | "recursive-doubling" => Some(Algorithm::RecursiveDoubling),
            "hier" | "hierarchical" => Some(Algorithm::Hierarchical),
            _ => None,
        }
    }
}

/// The ranks, links and settings one communicator runs on.
#[derive(Debug)]
pub(crate) struct Mesh {
    pub(crate) rank: u32,
    pub(crate) size: u32,
    /// Links indexed by rank (`None` for this rank).
    pub(crate) peers: Vec<Option<Peer>>,
    /// Ring order of ranks.
    pub(crate) ring: Vec<u32>,
    pub(crate) abort: Arc<AtomicBool>,
    pub(crate) timeout: Duration,
    pub(crate) algorithm: Algorithm,
    /// Whether any link is TCP (changes the cost model).
    pub(crate) any_tcp: bool,
    /// The rendezvous store, kept to find the culprit of a timeout.
    pub(crate) store: Option<StoreClient>,
    /// Host of every rank.
    pub(crate) hosts: Vec<String>,
    /// Operations run so far (every rank runs the same sequence).
    pub(crate) op_seq: u64,
    /// Working memory reused across operations (kept as u64 so any element type fits
    /// aligned); it grows to the largest message that needed it and is never freed early, so
    /// large operations do not pay page faults on every call.
    pub(crate) scratch: Vec<u64>,
    /// Busy-wait rounds before yielding (see `engine::SPINS`).
    pub(crate) spins: u32,
    /// The two-level layout, when ranks span several hosts with as many ranks on each.
    pub(crate) hierarchy: Option<Hierarchy>,
}

/// The groups of the two-level allreduce, for one rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    /// This host's ranks, in ring order.
    pub(crate) local: Vec<u32>,
    /// The ranks with this rank's local index on every host, hosts in ring order.
    pub(crate) rail: Vec<u32>,
}

impl Hierarchy {
    /// Derives the layout from the ring and each rank's machine; `None` with one host, one
    /// rank per host, or hosts with different numbers of ranks.
    pub(crate) fn new(ring: &[u32], machine_of: &[String], rank: u32) -> Option<Hierarchy> {
        let mut machines: Vec<&String> = Vec::new();
        for &r in ring {
            let machine = machine_of.get(r as usize)?;
            if !machines.contains(&machine) {
                machines.push(machine);
            }
        }
        let groups: Vec<Vec<u32>> = machines
            .iter()
            .map(|m| {
                ring.iter()
                    .copied()
                    .filter(|&r| &machine_of[r as usize] == *m)
                    .collect()
            })
            .collect();
        let per_host = groups.first()?.len();
        if groups.len() < 2 || per_host < 2 || groups.iter().any(|g| g.len() != per_host) {
            return None;
        }
        let mine = groups.iter().position(|g| g.contains(&rank))?;
        let index = position_in(&groups[mine], rank);
        Some(Hierarchy {
            local: groups[mine].clone(),
            rail: groups.iter().map(|g| g[index]).collect(),
        })
    }
}

/// Takes the reusable working buffer, sized for `len` elements of `T`.
fn take_scratch<T: Element>(store: &mut Vec<u64>, len: usize) -> Vec<u64> {
    let words = (len * std::mem::size_of::<T>()).div_ceil(8);
    let mut buffer = std::mem::take(store);
    if buffer.len() < words {
        buffer.resize(words, 0);
    }
    buffer
}

/// Views the first `len` elements of a scratch buffer as `T`.
fn typed<T: Element>(buffer: &mut [u64], len: usize) -> &mut [T] {
    &mut bytemuck::cast_slice_mut::<u64, T>(buffer)[..len]
}

/// How long ranks that timed out spend finding out which rank stalled.
const DIAGNOSIS: Duration = Duration::from_secs(2);

/// Where received elements go.
#[derive(Clone, Copy)]
enum Into {
    Copy,
    Reduce(ReduceOp),
}

/// The context of one operation: its name, deadline and waiting policy.
fn op_ctx<'a>(op: &'static str, mesh: &Mesh, abort: &'a AtomicBool) -> OpCtx<'a> {
    let start = Instant::now();
    OpCtx {
        op,
        start,
        deadline: start + mesh.timeout,
        abort,
        spins: mesh.spins,
    }
}

/// Where `rank` is in `ring` (0 when absent, which planning never allows).
fn position_in(ring: &[u32], rank: u32) -> usize {
    ring.iter().position(|&r| r == rank).unwrap_or(0)
}

/// This rank's position in `ring` and the ranks to its left and right.
fn neighbours(ring: &[u32], rank: u32) -> (usize, usize, usize) {
    let n = ring.len();
    let pos = position_in(ring, rank);
    (
        pos,
        ring[(pos + n - 1) % n] as usize,
        ring[(pos + 1) % n] as usize,
    )
}

fn block(count: usize, blocks: usize, index: usize) -> Range<usize> {
    count * index / blocks..count * (index + 1) / blocks
}

/// Borrows one range for reading and another, disjoint one for writing.
fn split<T>(data: &mut [T], read: Range<usize>, write: Range<usize>) -> (&[T], &mut [T]) {
    if read.start >= write.end {
        let (low, high) = data.split_at_mut(read.start);
        (&high[..read.len()], &mut low[write])
    } else {
        let (low, high) = data.split_at_mut(write.start);
        (&low[read], &mut high[..write.len()])
    }
}

impl Mesh {
    /// Runs one operation; a timeout is followed by a short diagnosis through the store.
    pub(crate) fn run_op<R>(
        &mut self,
        f: impl FnOnce(&mut Mesh) -> Result<R, CommError>,
    ) -> Result<R, CommError> {
        self.op_seq += 1;
        match f(self) {
            Err(CommError::Timeout {
                op,
                rank,
                host,
                elapsed,
                culprit: None,
            }) => {
                let culprit = self.find_stalled(rank);
                Err(CommError::Timeout {
                    op,
                    rank,
                    host,
                    elapsed,
                    culprit,
                })
            }
            other => other,
        }
    }

    /// Every rank that times out publishes whom it waited on; following that chain from our
    /// own peer ends at the rank that published nothing: the one that is stopped or stuck.
    fn find_stalled(&mut self, waited_on: u32) -> Option<String> {
        let me = self.rank;
        let store = self.store.as_mut()?;
        let deadline = Instant::now() + DIAGNOSIS;
        // Not keyed by operation: ranks a ring step apart can be in different operations.
        let key = |rank: u32| format!("stalled/{rank}");
        if store
            .set(&key(me), waited_on.to_string().as_bytes(), deadline)
            .is_err()
        {
            return Some(
                "the rendezvous store on rank 0 does not answer either: rank 0 is probably stopped or stuck"
                    .to_owned(),
            );
        }
        let mut current = waited_on;
        let mut seen = vec![me];
        loop {
            if seen.contains(&current) {
                return None;
            }
            seen.push(current);
            match store.get(&key(current), deadline) {
                Ok(value) => {
                    current = std::str::from_utf8(&value).ok()?.parse().ok()?;
                }
                Err(_) => {
                    let host = self
                        .hosts
                        .get(current as usize)
                        .cloned()
                        .unwrap_or_default();
                    return Some(format!(
                        "rank {current} on {host} is the one not progressing (stopped, or stuck outside collectives)"
                    ));
                }
            }
        }
    }
    fn position(&self) -> usize {
        position_in(&self.ring, self.rank)
    }

    /// Sends `send` to a peer while receiving into `recv` (copied or reduced) from another.
    fn send_recv<T: Element>(
        &mut self,
        ctx: &OpCtx<'_>,
        send: Option<(usize, &[T])>,
        recv: Option<(usize, &mut [T], Into)>,
    ) -> Result<(), CommError> {
        let unit = std::mem::size_of::<T>();
        let outgoing = send.map(|(to, data)| (to, bytemuck::cast_slice::<T, u8>(data), unit));
        match recv {
            None => exchange(&mut self.peers, ctx, outgoing, None),
            Some((from, dst, Into::Copy)) => {
                let len = std::mem::size_of_val(dst);
                let bytes = bytemuck::cast_slice_mut::<T, u8>(dst);
                exchange(
                    &mut self.peers,
                    ctx,
                    outgoing,
                    Some(Incoming {
                        from,
                        len,
                        unit,
                        sink: Sink::Copy(bytes),
                    }),
                )
            }
            Some((from, dst, Into::Reduce(op))) => {
                let len = std::mem::size_of_val(dst);
                let mut offset = 0usize; // in elements
                let mut reduce = |bytes: &[u8]| -> usize {
                    let n = bytes.len() / unit;
                    let target = &mut dst[offset..offset + n];
                    match bytemuck::try_cast_slice::<u8, T>(bytes) {
                        Ok(src) => T::reduce_into(target, src, op),
                        // Misaligned bytes (never expected): copy to an aligned buffer.
                        Err(_) => {
                            let mut src = vec![T::zeroed(); n];
                            bytemuck::cast_slice_mut::<T, u8>(&mut src).copy_from_slice(bytes);
                            T::reduce_into(target, &src, op);
                        }
                    }
                    offset += n;
                    n * unit
                };
                exchange(
                    &mut self.peers,
                    ctx,
                    outgoing,
                    Some(Incoming {
                        from,
                        len,
                        unit,
                        sink: Sink::With(&mut reduce),
                    }),
                )
            }
        }
    }

    /// Ring reduce-scatter in place: afterwards the rank at ring position `p` holds the fully
    /// reduced block `owner(p)`.
    fn ring_reduce_scatter<T: Element>(
        &mut self,
        ctx: &OpCtx<'_>,
        data: &mut [T],
        op: ReduceOp,
        ring: &[u32],
        owner: &dyn Fn(usize) -> usize,
    ) -> Result<(), CommError> {
        let n = ring.len();
        let (pos, left, right) = neighbours(ring, self.rank);
        for step in 0..n - 1 {
            let send_block = block(data.len(), n, owner((pos + n - step - 1) % n));
            let recv_block = block(data.len(), n, owner((pos + n - step - 2) % n));
            let (send, recv) = split(data, send_block, recv_block);
            self.send_recv(
                ctx,
                Some((right, send)),
                Some((left, recv, Into::Reduce(op))),
            )?;
        }
        Ok(())
    }

    /// Ring allgather in place: the rank at position `p` starts with block `owner(p)`.
    fn ring_allgather<T: Element>(
        &mut self,
        ctx: &OpCtx<'_>,
        data: &mut [T],
        ring: &[u32],
        owner: &dyn Fn(usize) -> usize,
    ) -> Result<(), CommError> {
        let n = ring.len();
        let (pos, left, right) = neighbours(ring, self.rank);
        for step in 0..n - 1 {
            let send_block = block(data.len(), n, owner((pos + n - step) % n));
            let recv_block = block(data.len(), n, owner((pos + n - step - 1) % n));
            let (send, recv) = split(data, send_block, recv_block);
            self.send_recv(ctx, Some((right, send)), Some((left, recv, Into::Copy)))?;
        }
        Ok(())
    }

    /// Recursive doubling allreduce among `group`, folding the members beyond the largest
    /// power of two first. Partners combine the lower group index's side first.
    fn rd_allreduce<T: Element>(
        &mut self,
        ctx: &OpCtx<'_>,
        data: &mut [T],
        op: ReduceOp,
        group: &[u32],
    ) -> Result<(), CommError> {
        let mut buffer = take_scratch::<T>(&mut self.scratch, data.len());
        let result = self.rd_allreduce_with(ctx, data, op, typed(&mut buffer, data.len()), group);
        self.scratch = buffer;
        result
    }

    fn rd_allreduce_with<T: Element>(
        &mut self,
        ctx: &OpCtx<'_>,
        data: &mut [T],
        op: ReduceOp,
        scratch: &mut [T],
        group: &[u32],
    ) -> Result<(), CommError> {
        let n = group.len();
        let p = 1usize << (usize::BITS - 1 - n.leading_zeros());
        let extra = n - p;
        let me = position_in(group, self.rank);
        let member = |index: usize| group[index] as usize;
        // Fold: among the first 2*extra members, even ones hand their data to the next odd one.
        let virtual_index = if me < 2 * extra {
            if me % 2 == 0 {
                self.send_recv::<T>(ctx, Some((member(me + 1), data)), None)?;
                self.send_recv::<T>(ctx, None, Some((member(me + 1), data, Into::Copy)))?;
                return Ok(());
            }
            self.send_recv::<T>(ctx, None, Some((member(me - 1), &mut *scratch, Into::Copy)))?;
            // The lower index's side first.
            T::reduce_into(scratch, data, op);
            data.copy_from_slice(scratch);
            me / 2
        } else {
            me - extra
        };
        let index_of = |v: usize| if v < extra { v * 2 + 1 } else { v + extra };
        let mut mask = 1;
        while mask < p {
            let partner = index_of(virtual_index ^ mask);
            self.send_recv::<T>(
                ctx,
                Some((member(partner), data)),
                Some((member(partner), &mut *scratch, Into::Copy)),
            )?;
            if me < partner {
                T::reduce_into(data, scratch, op);
            } else {
                T::reduce_into(scratch, data, op);
                data.copy_from_slice(scratch);
            }
            mask <<= 1;
        }
        if me < 2 * extra {
            self.send_recv::<T>(ctx, Some((member(me - 1), data)), None)?;
        }
        Ok(())
    }

    /// Allreduce among `group` (no averaging): recursive doubling or ring by the cost model.
    fn group_allreduce<T: Element>(
        &mut self,
        ctx: &OpCtx<'_>,
        data: &mut [T],
        op: ReduceOp,
        group: &[u32],
    ) -> Result<(), CommError> {
        if group.len() < 2 || data.is_empty() {
            return Ok(());
        }
        if self.prefer_recursive_doubling(std::mem::size_of_val(data), group.len())
            || data.len() < group.len()
        {
            self.rd_allreduce(ctx, data, op, group)
        } else {
            self.ring_reduce_scatter(ctx, data, op, group, &|p| p)?;
            self.ring_allgather(ctx, data, group, &|p| p)
        }
    }

    /// Whether recursive doubling is cheaper for this message (a simple latency-bandwidth
    /// model: it sends the whole message log2(n) times, the ring sends 2(n-1)/n of it in
    /// 2(n-1) steps; per-step latency is about 1 us on shared memory and 30 us over TCP,
    /// bandwidth a few GB/s on either).
    fn prefer_recursive_doubling(&self, bytes: usize, members: usize) -> bool {
        match self.algorithm {
            Algorithm::Ring | Algorithm::Hierarchical => false,
            Algorithm::RecursiveDoubling => true,
            Algorithm::Auto => {
                #[allow(clippy::cast_precision_loss)]
                let n = members as f64;
                let (latency_us, gb_per_s) = if self.any_tcp {
                    (30.0, 1.0)
                } else {
                    (1.0, 4.0)
                };
                #[allow(clippy::cast_precision_loss)]
                let bytes = bytes as f64;
                // Moving a byte and reducing it cost about the same on one core.
                let per_byte_us = 1.0 / (gb_per_s * 1e3);
                // Recursive doubling moves and reduces the whole message at each of its steps;
                // the ring moves 2(n-1)/n of it and reduces (n-1)/n, in 2(n-1) steps.
                let rd = n.log2().ceil() * (latency_us + 2.0 * bytes * per_byte_us);
                let ring = 2.0 * (n - 1.0) * latency_us + 3.0 * (n - 1.0) / n * bytes * per_byte_us;
                rd <= ring
            }
        }
    }

    pub(crate) fn allreduce<T: Element>(
        &mut self,
        data: &mut [T],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        let abort = Arc::clone(&self.abort);
        let ctx = op_ctx("allreduce", self, &abort);
        // Averages are sums divided once at the end, identically on every rank.
        let sum_op = if op == ReduceOp::Avg {
            ReduceOp::Sum
        } else {
            op
        };
        let bytes = std::mem::size_of_val(data);
        let hierarchy = self.hierarchy.clone();
        match hierarchy {
            Some(hierarchy)
                if self.algorithm == Algorithm::Hierarchical
                    || (self.algorithm == Algorithm::Auto
                        && data.len() >= hierarchy.local.len()
                        && !self.prefer_recursive_doubling(bytes, self.size as usize)) =>
            {
                self.hierarchical_allreduce(&ctx, data, sum_op, &hierarchy)?;
            }
            _ => {
                let ring = self.ring.clone();
                self.group_allreduce(&ctx, data, sum_op, &ring)?;
            }
        }
        if op == ReduceOp::Avg {
            T::divide(data, self.size as usize);
        }
        Ok(())
    }

    /// Two levels: reduce-scatter among this host's ranks over shared memory, allreduce of
    /// this rank's block along its rail (the ranks with the same local index on every host,
    /// which use the same NIC index), then allgather among this host's ranks.
    fn hierarchical_allreduce<T: Element>(
        &mut self,
        ctx: &OpCtx<'_>,
        data: &mut [T],
        op: ReduceOp,
        hierarchy: &Hierarchy,
    ) -> Result<(), CommError> {
        let local = &hierarchy.local;
        let mine = block(data.len(), local.len(), position_in(local, self.rank));
        if local.len() > 1 {
            self.ring_reduce_scatter(ctx, data, op, local, &|p| p)?;
        }
        self.group_allreduce(ctx, &mut data[mine], op, &hierarchy.rail)?;
        if local.len() > 1 {
            self.ring_allgather(ctx, data, local, &|p| p)?;
        }
        Ok(())
    }

    pub(crate) fn broadcast<T: Element>(
        &mut self,
        data: &mut [T],
        root: u32,
    ) -> Result<(), CommError> {
        self.check_root(root)?;
        let abort = Arc::clone(&self.abort);
        let ctx = op_ctx("broadcast", self, &abort);
        let n = self.ring.len();
        if n == 1 {
            return Ok(());
        }
        let (pos, left, right) = neighbours(&self.ring, self.rank);
        let root_pos = self.ring.iter().position(|&r| r == root).unwrap_or(0);
        let relative = (pos + n - root_pos) % n;
        // Pipelined in chunks of 256 KiB so every hop of the ring is busy at once.
        let chunk = (256 * 1024 / std::mem::size_of::<T>()).max(1);
        let chunks = data.len().div_ceil(chunk).max(1);
        let total = data.len();
        let range = |k: usize| (k * chunk).min(total)..((k + 1) * chunk).min(total);
        if relative == 0 {
            for k in 0..chunks {
                self.send_recv::<T>(&ctx, Some((right, &data[range(k)])), None)?;
            }
        } else if relative == n - 1 {
            for k in 0..chunks {
                let r = range(k);
                self.send_recv::<T>(&ctx, None, Some((left, &mut data[r], Into::Copy)))?;
            }
        } else {
            for k in 0..=chunks {
                let send = (k > 0).then(|| range(k - 1));
                let recv = (k < chunks).then(|| range(k));
                match (send, recv) {
                    (Some(s), Some(r)) => {
                        let (s, r) = split(data, s, r);
                        self.send_recv(&ctx, Some((right, s)), Some((left, r, Into::Copy)))?;
                    }
                    (Some(s), None) => {
                        self.send_recv::<T>(&ctx, Some((right, &data[s])), None)?;
                    }
                    (None, Some(r)) => {
                        self.send_recv::<T>(&ctx, None, Some((left, &mut data[r], Into::Copy)))?;
                    }
                    (None, None) => {}
                }
            }
        }
        Ok(())
    }

    pub(crate) fn reduce<T: Element>(
        &mut self,
        data: &mut [T],
        op: ReduceOp,
        root: u32,
    ) -> Result<(), CommError> {
        self.check_root(root)?;
        let abort = Arc::clone(&self.abort);
        let ctx = op_ctx("reduce", self, &abort);
        let n = self.ring.len();
        if n > 1 && !data.is_empty() {
            let ring = self.ring.clone();
            let sum_op = if op == ReduceOp::Avg {
                ReduceOp::Sum
            } else {
                op
            };
            self.ring_reduce_scatter(&ctx, data, sum_op, &ring, &|p| p)?;
            // Gather the reduced blocks at the root.
            let pos = self.position();
            if self.rank == root {
                for p in 0..n {
                    if p != pos {
                        let from = self.ring[p] as usize;
                        let r = block(data.len(), n, p);
                        self.send_recv::<T>(&ctx, None, Some((from, &mut data[r], Into::Copy)))?;
                    }
                }
            } else {
                let r = block(data.len(), n, pos);
                self.send_recv::<T>(&ctx, Some((root as usize, &data[r])), None)?;
            }
        }
        if op == ReduceOp::Avg && self.rank == root {
            T::divide(data, self.size as usize);
        }
        Ok(())
    }

    pub(crate) fn allgather<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
    ) -> Result<(), CommError> {
        let n = self.size as usize;
        if recv.len() != send.len() * n {
            return Err(CommError::Invalid(format!(
                "allgather needs a receive buffer of {} x {} elements, got {}",
                n,
                send.len(),
                recv.len()
            )));
        }
        let me = self.rank as usize;
        recv[me * send.len()..(me + 1) * send.len()].copy_from_slice(send);
        if n == 1 || send.is_empty() {
            return Ok(());
        }
        let abort = Arc::clone(&self.abort);
        let ctx = op_ctx("allgather", self, &abort);
        let ring = self.ring.clone();
        self.ring_allgather(&ctx, recv, &ring, &|p| ring[p] as usize)
    }

    pub(crate) fn reduce_scatter<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
    ) -> Result<(), CommError> {
        let n = self.size as usize;
        if send.len() != recv.len() * n {
            return Err(CommError::Invalid(format!(
                "reduce_scatter needs a send buffer of {} x {} elements, got {}",
                n,
                recv.len(),
                send.len()
            )));
        }
        let mut buffer = take_scratch::<T>(&mut self.scratch, send.len());
        let work = typed::<T>(&mut buffer, send.len());
        work.copy_from_slice(send);
        let mut result = Ok(());
        if n > 1 && !recv.is_empty() {
            let abort = Arc::clone(&self.abort);
            let ctx = op_ctx("reduce_scatter", self, &abort);
            let ring = self.ring.clone();
            let sum_op = if op == ReduceOp::Avg {
                ReduceOp::Sum
            } else {
                op
            };
            result = self.ring_reduce_scatter(&ctx, work, sum_op, &ring, &|p| ring[p] as usize);
        }
        let me = self.rank as usize;
        recv.copy_from_slice(&work[me * recv.len()..(me + 1) * recv.len()]);
        self.scratch = buffer;
        result?;
        if op == ReduceOp::Avg {
            T::divide(recv, n);
        }
        Ok(())
    }

    fn check_root(&self, root: u32) -> Result<(), CommError> {
        if root < self.size {
            Ok(())
        } else {
            Err(CommError::Invalid(format!(
                "root {root} is not a rank (world size {})",
                self.size
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchy_groups_hosts_and_rails() {
        let machines: Vec<String> = ["a", "a", "b", "b", "c", "c"].map(String::from).to_vec();
        let ring = [0, 1, 2, 3, 4, 5];
        let h = Hierarchy::new(&ring, &machines, 3).unwrap();
        assert_eq!(h.local, [2, 3]);
        assert_eq!(h.rail, [1, 3, 5]);
        // One host, one rank per host, or uneven hosts: no hierarchy.
        assert_eq!(Hierarchy::new(&[0, 1], &["a".into(), "a".into()], 0), None);
        assert_eq!(Hierarchy::new(&[0, 1], &["a".into(), "b".into()], 0), None);
        let uneven: Vec<String> = ["a", "a", "a", "b"].map(String::from).to_vec();
        assert_eq!(Hierarchy::new(&[0, 1, 2, 3], &uneven, 0), None);
    }

    #[test]
    fn algorithm_names_parse() {
        assert_eq!(Algorithm::parse("hier"), Some(Algorithm::Hierarchical));
        assert_eq!(Algorithm::parse("rd"), Some(Algorithm::RecursiveDoubling));
        assert_eq!(Algorithm::parse("fast"), None);
    }
}
