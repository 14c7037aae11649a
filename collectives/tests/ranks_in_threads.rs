//! Every operation, type and reduction against a naive reference, for world sizes 1 to 8, over
//! shared memory and over TCP, with each rank a thread of this process (fast; the same
//! operations run in real processes in the CLI's tests).

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]
// Rank numbers in tests are tiny.
#![allow(clippy::cast_possible_truncation)]

use std::net::TcpListener;
use std::time::Duration;

use cohort_collectives::{
    bf16, f16, Algorithm, CommError, CommOptions, Communicator, Element, ReduceOp, Transport,
};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn options(
    rank: u32,
    size: u32,
    store: &str,
    transport: Transport,
    algorithm: Algorithm,
) -> CommOptions {
    CommOptions {
        rank,
        world_size: size,
        local_rank: rank,
        local_world_size: size,
        store: store.to_owned(),
        secret: b"0123456789abcdef-test".to_vec(),
        plan: None,
        timeout: Duration::from_secs(60),
        transport,
        algorithm,
        tcp_streams: None,
        store_fd: None,
    }
}

/// Runs `f` on `size` ranks (threads) and returns what each rank returned.
fn with_ranks<R: Send + 'static>(
    size: u32,
    transport: Transport,
    algorithm: Algorithm,
    f: impl Fn(Communicator) -> R + Send + Sync + Copy + 'static,
) -> Vec<R> {
    with_ranks_streams(size, transport, algorithm, None, f)
}

/// [`with_ranks`] with `streams` TCP connections per peer (`None`: the default).
fn with_ranks_streams<R: Send + 'static>(
    size: u32,
    transport: Transport,
    algorithm: Algorithm,
    streams: Option<usize>,
    f: impl Fn(Communicator) -> R + Send + Sync + Copy + 'static,
) -> Vec<R> {
    let store = format!("127.0.0.1:{}", free_port());
    let threads: Vec<_> = (0..size)
        .map(|rank| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut options = options(rank, size, &store, transport, algorithm);
                options.tcp_streams = streams;
                let comm =
                    Communicator::new(options).unwrap_or_else(|e| panic!("rank {rank}: {e}"));
                f(comm)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// The test's own arithmetic for each element type, apart from the library's `reduce_into`:
/// floats in the precision the library documents (f16 and bf16 in f32; the test values are
/// signed powers of two, so sums and products of up to eight of them are exact, and only a
/// mean rounds), integers wrapping.
trait Exact: Element {
    fn combine(a: Self, b: Self, op: ReduceOp) -> Self;
    fn mean(sum: Self, n: usize) -> Self;
}

macro_rules! exact_float {
    ($t:ty, $to:expr, $from:expr, $mean:expr) => {
        impl Exact for $t {
            fn combine(a: Self, b: Self, op: ReduceOp) -> Self {
                let (x, y): (f64, f64) = ($to(a), $to(b));
                $from(match op {
                    ReduceOp::Sum | ReduceOp::Avg => x + y,
                    ReduceOp::Prod => x * y,
                    ReduceOp::Min => {
                        if y < x {
                            y
                        } else {
                            x
                        }
                    }
                    ReduceOp::Max => {
                        if y > x {
                            y
                        } else {
                            x
                        }
                    }
                })
            }
            fn mean(sum: Self, n: usize) -> Self {
                $mean(sum, n)
            }
        }
    };
}
exact_float!(f32, f64::from, |v: f64| v as f32, |s: f32, n: usize| s / n
    as f32);
exact_float!(f64, |v: f64| v, |v: f64| v, |s: f64, n: usize| s / n as f64);
exact_float!(f16, f16::to_f64, f16::from_f64, |s: f16, n: usize| {
    f16::from_f32(s.to_f32() / n as f32)
});
exact_float!(bf16, bf16::to_f64, bf16::from_f64, |s: bf16, n: usize| {
    bf16::from_f32(s.to_f32() / n as f32)
});

macro_rules! exact_int {
    ($t:ty) => {
        impl Exact for $t {
            fn combine(a: Self, b: Self, op: ReduceOp) -> Self {
                match op {
                    ReduceOp::Sum | ReduceOp::Avg => a.wrapping_add(b),
                    ReduceOp::Prod => a.wrapping_mul(b),
                    ReduceOp::Min => std::cmp::min(a, b),
                    ReduceOp::Max => std::cmp::max(a, b),
                }
            }
            fn mean(sum: Self, n: usize) -> Self {
                sum / <$t>::try_from(n).unwrap()
            }
        }
    };
}
exact_int!(i32);
exact_int!(i64);
exact_int!(u8);

fn reference<T: Exact>(size: usize, count: usize, op: ReduceOp) -> Vec<T> {
    (0..count)
        .map(|i| {
            let folded = (1..size).fold(T::test_value(0, i), |acc, rank| {
                T::combine(acc, T::test_value(rank, i), op)
            });
            if op == ReduceOp::Avg {
                T::mean(folded, size)
            } else {
                folded
            }
        })
        .collect()
}

/// The reference itself, on values worked out by hand: three ranks of f32 at element 0 hold
/// -1, 2 and 1 (`test_value` cycles through -1, 0.5, 1, 2), and of u8 hold 1, 2 and 3.
#[test]
fn the_reference_agrees_with_hand_computed_values() {
    let f = |op| reference::<f32>(3, 1, op)[0];
    assert_eq!(
        [0, 1, 2].map(|rank| f32::test_value(rank, 0)),
        [-1.0, 2.0, 1.0]
    );
    assert_eq!(f(ReduceOp::Sum), 2.0);
    assert_eq!(f(ReduceOp::Prod), -2.0);
    assert_eq!(f(ReduceOp::Min), -1.0);
    assert_eq!(f(ReduceOp::Max), 2.0);
    assert_eq!(f(ReduceOp::Avg), 2.0 / 3.0);
    let u = |op| reference::<u8>(3, 1, op)[0];
    assert_eq!([0, 1, 2].map(|rank| u8::test_value(rank, 0)), [1, 2, 3]);
    assert_eq!(u(ReduceOp::Sum), 6);
    assert_eq!(u(ReduceOp::Prod), 6);
    assert_eq!(u(ReduceOp::Min), 1);
    assert_eq!(u(ReduceOp::Max), 3);
    assert_eq!(u(ReduceOp::Avg), 2);
}

fn check_allreduce<T: Exact>(size: u32, transport: Transport, algorithm: Algorithm) {
    let results = with_ranks(size, transport, algorithm, |comm| {
        let mut out = Vec::new();
        for op in ReduceOp::ALL {
            for count in [0usize, 1, 7, 1023, 100_003] {
                let rank = comm.rank() as usize;
                let mut data: Vec<T> = (0..count).map(|i| T::test_value(rank, i)).collect();
                comm.allreduce(&mut data, op).unwrap();
                out.push((op, count, data));
            }
        }
        out
    });
    for rank_results in &results {
        for (op, count, data) in rank_results {
            let want = reference::<T>(size as usize, *count, *op);
            assert!(
                data == &want,
                "{:?} {op:?} count {count} size {size} {transport:?} {algorithm:?}",
                T::TYPE
            );
        }
    }
}

#[test]
fn allreduce_matches_the_reference_for_every_type_op_and_size() {
    for size in 1..=8 {
        for transport in [Transport::Auto, Transport::Tcp] {
            check_allreduce::<f32>(size, transport, Algorithm::Auto);
        }
    }
    for size in [2, 3, 5] {
        for algorithm in [Algorithm::Ring, Algorithm::RecursiveDoubling] {
            check_allreduce::<f64>(size, Transport::Auto, algorithm);
            check_allreduce::<f16>(size, Transport::Auto, algorithm);
            check_allreduce::<bf16>(size, Transport::Auto, algorithm);
            check_allreduce::<i32>(size, Transport::Auto, algorithm);
            check_allreduce::<i64>(size, Transport::Tcp, algorithm);
            check_allreduce::<u8>(size, Transport::Auto, algorithm);
        }
    }
}

/// Allreduce and broadcast of counts that end mid-piece and exceed every buffer, over
/// `transport` with `streams` TCP connections per peer.
fn check_large<T: Exact>(size: u32, transport: Transport, streams: Option<usize>) {
    let counts = [0usize, 7, 262_147, 1_000_003];
    let results = with_ranks_streams(size, transport, Algorithm::Ring, streams, move |comm| {
        let rank = comm.rank() as usize;
        let mut out = Vec::new();
        for count in counts {
            let mut data: Vec<T> = (0..count).map(|i| T::test_value(rank, i)).collect();
            comm.allreduce(&mut data, ReduceOp::Sum).unwrap();
            let mut root: Vec<T> = (0..count).map(|i| T::test_value(1, i)).collect();
            if rank != 1 {
                root.iter_mut().for_each(|x| *x = T::zeroed());
            }
            comm.broadcast(&mut root, 1).unwrap();
            out.push((count, data, root));
        }
        out
    });
    for rank_results in &results {
        for (count, data, root) in rank_results {
            let want = reference::<T>(size as usize, *count, ReduceOp::Sum);
            let what = format!(
                "{:?} count {count} size {size} {transport:?} streams {streams:?}",
                T::TYPE
            );
            assert!(data == &want, "allreduce {what}");
            let sent: Vec<T> = (0..*count).map(|i| T::test_value(1, i)).collect();
            assert!(root == &sent, "broadcast {what}");
        }
    }
}

/// Several TCP connections per peer: messages striped over them in 1 MiB pieces arrive whole
/// and in order, for element sizes 1 to 8 and counts that end mid-stripe.
#[test]
fn striped_tcp_links_carry_every_operation_intact() {
    for (size, streams) in [(2, 2), (3, 3), (2, 5)] {
        check_large::<f32>(size, Transport::Tcp, Some(streams));
        check_large::<u8>(size, Transport::Tcp, Some(streams));
        check_large::<bf16>(size, Transport::Tcp, Some(streams));
        check_large::<f64>(size, Transport::Tcp, Some(streams));
    }
}

/// The slot protocol of RDMA write with immediate (chunks into the peer's slots, credits,
/// order), carried over TCP: every type, op and size, and messages larger than the ring.
#[test]
fn the_slot_protocol_over_tcp_carries_every_operation_intact() {
    for size in [2, 3, 5] {
        check_allreduce::<f32>(size, Transport::TcpSlots, Algorithm::Auto);
        check_allreduce::<u8>(size, Transport::TcpSlots, Algorithm::Ring);
        check_allreduce::<f16>(size, Transport::TcpSlots, Algorithm::RecursiveDoubling);
        check_large::<f64>(size, Transport::TcpSlots, None);
        check_large::<bf16>(size, Transport::TcpSlots, None);
    }
}

/// RDMA verbs (`COHORT_TRANSPORT=rdma`, every peer over a queue pair, loopback through the
/// adapter on one host): where an adapter exists, every type, op and size; where none does,
/// asking for RDMA fails at once with the reason. `COHORT_TEST_RDMA=1` insists on the adapter.
#[test]
fn rdma_verbs_carry_every_operation_or_are_refused_with_the_reason() {
    let store = format!("127.0.0.1:{}", free_port());
    let attempts: Vec<_> = (0..2)
        .map(|rank| {
            let store = store.clone();
            std::thread::spawn(move || {
                Communicator::new(options(rank, 2, &store, Transport::Rdma, Algorithm::Auto))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    let outcomes: Vec<Result<(), String>> =
        attempts.into_iter().map(|t| t.join().unwrap()).collect();
    let required = std::env::var("COHORT_TEST_RDMA").as_deref() == Ok("1");
    if let Some(Err(why)) = outcomes.iter().find(|o| o.is_err()) {
        assert!(!required, "COHORT_TEST_RDMA=1 but: {why}");
        assert!(why.contains("COHORT_TRANSPORT=rdma"), "{why}");
        // Written past the test harness's capture, so it shows when the test passes.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: RDMA data path (set COHORT_TEST_RDMA=1 on a node with an adapter): {why}"
        );
        return;
    }
    for size in [2, 3] {
        check_allreduce::<f32>(size, Transport::Rdma, Algorithm::Auto);
        check_allreduce::<u8>(size, Transport::Rdma, Algorithm::Ring);
        check_large::<f64>(size, Transport::Rdma, None);
        check_large::<bf16>(size, Transport::Rdma, None);
    }
}

#[test]
fn broadcast_reduce_allgather_reduce_scatter_and_barrier() {
    for size in [1u32, 2, 3, 4, 7] {
        for transport in [Transport::Auto, Transport::Tcp] {
            with_ranks(size, transport, Algorithm::Auto, move |comm| {
                let rank = comm.rank() as usize;
                let n = comm.size() as usize;
                for count in [0usize, 1, 7, 1023, 300_001] {
                    for root in [0, n as u32 - 1] {
                        let mut data: Vec<f32> = if rank == root as usize {
                            (0..count).map(|i| f32::test_value(9, i)).collect()
                        } else {
                            vec![0.0; count]
                        };
                        comm.broadcast(&mut data, root).unwrap();
                        let want: Vec<f32> = (0..count).map(|i| f32::test_value(9, i)).collect();
                        assert!(data == want, "broadcast root {root} count {count}");

                        let mut data: Vec<i64> =
                            (0..count).map(|i| i64::test_value(rank, i)).collect();
                        comm.reduce(&mut data, ReduceOp::Sum, root).unwrap();
                        if rank == root as usize {
                            assert!(data == reference::<i64>(n, count, ReduceOp::Sum), "reduce");
                        }
                    }
                    let send: Vec<u8> = (0..count).map(|i| u8::test_value(rank, i)).collect();
                    let mut gathered = vec![0u8; count * n];
                    comm.allgather(&send, &mut gathered).unwrap();
                    for r in 0..n {
                        for i in 0..count {
                            assert_eq!(gathered[r * count + i], u8::test_value(r, i));
                        }
                    }
                    let send: Vec<f64> = (0..count * n).map(|i| f64::test_value(rank, i)).collect();
                    let mut mine = vec![0.0f64; count];
                    comm.reduce_scatter(&send, &mut mine, ReduceOp::Max)
                        .unwrap();
                    let full = reference::<f64>(n, count * n, ReduceOp::Max);
                    assert!(
                        mine[..] == full[rank * count..(rank + 1) * count],
                        "reduce_scatter"
                    );
                }
                comm.barrier().unwrap();
            });
        }
    }
}

#[test]
fn async_operations_overlap_and_keep_their_order() {
    with_ranks(3, Transport::Auto, Algorithm::Auto, |comm| {
        let rank = comm.rank() as usize;
        let handles: Vec<_> = (0..4)
            .map(|k| {
                let data: Vec<f32> = (0..10_000).map(|i| f32::test_value(rank + k, i)).collect();
                comm.allreduce_async(data, ReduceOp::Sum)
            })
            .collect();
        // A blocking call after asynchronous ones waits for them.
        let mut token = vec![rank as i32];
        comm.allreduce(&mut token, ReduceOp::Sum).unwrap();
        assert_eq!(token, [3]);
        for (k, handle) in handles.into_iter().enumerate() {
            let data = handle.wait().unwrap();
            let want: Vec<f32> = (0..10_000)
                .map(|i| (0..3).map(|r| f32::test_value(r + k, i)).sum())
                .collect();
            assert!(data == want);
        }
        let gathered = comm.allgather_async(vec![rank as u8]).wait().unwrap();
        assert_eq!(gathered, [0, 1, 2]);
        comm.barrier_async()
            .wait_timeout(Duration::from_secs(30))
            .unwrap()
            .unwrap();
    });
}

#[test]
fn abort_unblocks_a_waiting_operation() {
    let results = with_ranks(2, Transport::Auto, Algorithm::Auto, |comm| {
        if comm.rank() == 0 {
            // Rank 1 never joins this allreduce; aborting must end the wait.
            let abort = comm.abort_handle();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                abort.abort();
            });
            let mut data = vec![1.0f32; 1000];
            let started = std::time::Instant::now();
            let result = comm.allreduce(&mut data, ReduceOp::Sum);
            assert!(started.elapsed() < Duration::from_secs(5));
            Some(result)
        } else {
            std::thread::sleep(Duration::from_secs(1));
            None
        }
    });
    assert!(
        matches!(results[0], Some(Err(CommError::Aborted))),
        "{:?}",
        results[0]
    );
}

#[test]
fn a_wrong_secret_is_refused() {
    let store = format!("127.0.0.1:{}", free_port());
    let store2 = store.clone();
    let good = std::thread::spawn(move || {
        let mut options = options(0, 2, &store2, Transport::Auto, Algorithm::Auto);
        options.timeout = Duration::from_secs(2);
        Communicator::new(options)
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut bad = options(1, 2, &store, Transport::Auto, Algorithm::Auto);
    bad.secret = b"not-the-job-secret".to_vec();
    let err = Communicator::new(bad).unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");
    assert!(
        good.join().unwrap().is_err(),
        "rank 0 cannot complete without rank 1"
    );
}

/// Ranks spread over simulated hosts: the plan gives each rank a host name, so ranks of one
/// "host" talk over shared memory and the others over TCP, and the two-level allreduce runs.
fn with_hosts<R: Send + 'static>(
    hosts: &[usize],
    algorithm: Algorithm,
    f: impl Fn(Communicator) -> R + Send + Sync + Copy + 'static,
) -> Vec<R> {
    with_hosts_given(hosts, algorithm, false, f)
}

/// [`with_hosts`]; with `shares`, the ring goes through the hosts last to first and every
/// rank off rank 0's host is given only its host's share of the plan, as the daemons give
/// it: those ranks learn the ring from rank 0 through the store.
fn with_hosts_given<R: Send + 'static>(
    hosts: &[usize],
    algorithm: Algorithm,
    shares: bool,
    f: impl Fn(Communicator) -> R + Send + Sync + Copy + 'static,
) -> Vec<R> {
    use cohort_proto::plan::{Plan, RankPlan, PLAN_FORMAT, PLAN_VERSION};
    let host_of: Vec<usize> = hosts
        .iter()
        .enumerate()
        .flat_map(|(h, &n)| std::iter::repeat_n(h, n))
        .collect();
    let size = host_of.len() as u32;
    let plan = Plan {
        format: PLAN_FORMAT.into(),
        version: PLAN_VERSION,
        ranks: host_of
            .iter()
            .enumerate()
            .map(|(rank, &h)| RankPlan {
                rank: rank as u32,
                host: format!("node{h}"),
                local_rank: host_of[..rank].iter().filter(|&&x| x == h).count() as u32,
                gpu: None,
                nics: vec![],
                address: "127.0.0.1".into(),
                cpus: String::new(),
                ..RankPlan::default()
            })
            .collect(),
        rings: vec![if shares {
            (0..hosts.len())
                .rev()
                .flat_map(|h| {
                    let host_of = &host_of;
                    (0..size).filter(move |&r| host_of[r as usize] == h)
                })
                .collect()
        } else {
            (0..size).collect()
        }],
        world_size: None,
    };
    let store = format!("127.0.0.1:{}", free_port());
    let threads: Vec<_> = (0..size)
        .map(|rank| {
            let mut options = options(rank, size, &store, Transport::Auto, algorithm);
            let host = &plan.ranks[rank as usize].host;
            options.plan = Some(if shares && host != "node0" {
                plan.share(host)
            } else {
                plan.clone()
            });
            std::thread::spawn(move || f(Communicator::new(options).unwrap()))
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn two_level_allreduce_across_simulated_hosts() {
    for hosts in [&[2usize, 2][..], &[3, 3], &[2, 2, 2], &[3, 1]] {
        for algorithm in [Algorithm::Auto, Algorithm::Hierarchical] {
            let size: usize = hosts.iter().sum();
            let results = with_hosts(hosts, algorithm, |comm| {
                let summary = comm.transport_summary();
                let rank = comm.rank() as usize;
                let mut out = Vec::new();
                for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Avg] {
                    for count in [1usize, 5, 1023, 100_003] {
                        let mut data: Vec<f32> =
                            (0..count).map(|i| f32::test_value(rank, i)).collect();
                        comm.allreduce(&mut data, op).unwrap();
                        out.push((op, count, data));
                    }
                }
                (summary, out)
            });
            for (rank, (summary, out)) in results.iter().enumerate() {
                let host = hosts
                    .iter()
                    .scan(0, |acc, &n| {
                        *acc += n;
                        Some(*acc)
                    })
                    .position(|end| rank < end)
                    .unwrap();
                let local_peers = hosts[host] - 1;
                assert_eq!(
                    summary,
                    &format!("shm:{local_peers} tcp:{}", size - 1 - local_peers)
                );
                for (op, count, data) in out {
                    assert!(
                        data == &reference::<f32>(size, *count, *op),
                        "{hosts:?} {algorithm:?} {op:?} {count}"
                    );
                }
            }
        }
    }
}

#[test]
fn ranks_given_their_node_s_share_follow_rank_0_s_ring() {
    for hosts in [&[2usize, 2][..], &[1, 2, 3]] {
        let size: usize = hosts.iter().sum();
        let results = with_hosts_given(hosts, Algorithm::Auto, true, |comm| {
            let rank = comm.rank() as usize;
            let mut data: Vec<f32> = (0..10_007).map(|i| f32::test_value(rank, i)).collect();
            comm.allreduce(&mut data, ReduceOp::Sum).unwrap();
            data
        });
        for data in &results {
            assert!(
                data == &reference::<f32>(size, 10_007, ReduceOp::Sum),
                "{hosts:?}"
            );
        }
    }
}
