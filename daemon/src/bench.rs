//! `cohortd --bench-gang N`: the gang start of one step across N simulated nodes, through the
//! real code (peer listener, handshakes, the actor, placement, the plan): the leader in this
//! process, and N-1 follower tasks on loopback, each with its own node name, in a second
//! `cohortd` process (each process then holds one end of each connection, so 16,384 nodes fit
//! the usual limit of 20,000 open files). Prints the time from the leader's join to the last
//! node holding its share of the plan, split into the joins (until the leader holds every
//! node's), the planning and the distribution, and the leader process's peak memory; checks
//! that every node got one rendezvous and its own rank, and the leader the ring.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cohort_proto::daemon::{JoinRequest, StepPlan};
use cohort_proto::plan::RankPlan;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio::sync::{mpsc, oneshot, watch};

use crate::gang::{self, GangCommand, NodeContext};

/// The cluster key of the simulation (both processes).
const KEY: &[u8] = b"bench-cluster-key-0123456789abcdef";

/// Lets this process hold `wanted` open files, or says how to.
fn open_files(wanted: u64, nodes: u32) -> Result<()> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("reading RLIMIT_NOFILE")?;
    if soft < wanted {
        setrlimit(Resource::RLIMIT_NOFILE, wanted, hard.max(wanted)).with_context(|| {
            format!(
                "--bench-gang {nodes} needs {wanted} open files in each of its two processes, and the limit is {soft} (hard {hard}): raise it (ulimit -n)"
            )
        })?;
    }
    Ok(())
}

/// The join of simulated node `node` for step `step`. The leader's names every node, as on a
/// real node; a follower's only the leader: each real node parses the whole list itself, in
/// parallel with the others, and N copies of it in one process would cost N^2 memory here.
fn request(names: &[String], node: u32, step: u32) -> JoinRequest {
    JoinRequest {
        job_id: 1,
        step_id: step,
        attempt: 0,
        nodes: if node == 0 {
            names.to_vec()
        } else {
            vec![names[0].clone()]
        },
        node_index: node,
        ranks: vec![node],
        world_size: u32::try_from(names.len()).unwrap_or(u32::MAX),
        gpus: vec![],
        gpu_ids: Vec::new(),
        topology_addr: None,
        timeout_ms: 120_000,
        store_port: None,
        uid: 0,
    }
}

/// What the followers' shares hold, put together: how many ranks, and the first rank found
/// on another host than its own simulated node (rank r runs on node r here), if any.
fn tally<'a>(ranks: impl Iterator<Item = &'a RankPlan>) -> (usize, Option<u32>) {
    let mut count = 0;
    let mut misplaced = None;
    for rank in ranks {
        count += 1;
        if rank.host != format!("node{}", rank.rank) {
            misplaced = misplaced.or(Some(rank.rank));
        }
    }
    (count, misplaced)
}

/// Runs the benchmark for `nodes` nodes, `repeats` times, and prints each figure and the median.
pub(crate) async fn gang(nodes: u32, repeats: u32) -> Result<()> {
    if nodes < 2 {
        bail!("--bench-gang needs at least 2 nodes");
    }
    open_files(u64::from(nodes) + 256, nodes)?;
    let key = Arc::new(KEY.to_vec());
    let listener = gang::peer_listener(([127, 0, 0, 1], 0).into())?;
    let address = listener.local_addr()?;
    let (_topology_tx, topology) = watch::channel(None);
    let mut peer_nodes = BTreeMap::new();
    peer_nodes.insert("node0".to_owned(), address);
    let context = NodeContext {
        node: "node0".to_owned(),
        topology,
        key: Arc::clone(&key),
        peer_nodes,
        peer_port: address.port(),
    };
    let (commands, receiver) = mpsc::channel(4096);
    tokio::spawn(gang::run(context, receiver));
    let accept_commands = commands.clone();
    let accept_key = Arc::clone(&key);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(gang::serve_peer(
                stream,
                Arc::clone(&accept_key),
                Arc::from("node0"),
                accept_commands.clone(),
            ));
        }
    });
    let ticker = commands.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(100));
        loop {
            interval.tick().await;
            if ticker.send(GangCommand::Tick).await.is_err() {
                break;
            }
        }
    });
    let mut followers = std::process::Command::new(
        std::env::current_exe().context("finding this program to run the followers")?,
    )
    .arg("--bench-gang")
    .arg(nodes.to_string())
    .arg("--bench-followers-of")
    .arg(address.to_string())
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .spawn()
    .context("starting the followers' process")?;
    let mut to_followers = followers.stdin.take().context("the followers' stdin")?;
    let mut from_followers =
        std::io::BufReader::new(followers.stdout.take().context("the followers' stdout")?);
    let names: Vec<String> = (0..nodes).map(|n| format!("node{n}")).collect();
    let mut times = Vec::new();
    for step in 0..repeats {
        let start = Instant::now();
        writeln!(to_followers, "{step}").context("telling the followers to start")?;
        to_followers.flush()?;
        let (respond, leader) = oneshot::channel();
        commands
            .send(GangCommand::LeaderJoin {
                request: request(&names, 0, step),
                respond,
            })
            .await
            .context("the gang actor stopped")?;
        let plan = leader
            .await
            .context("no answer")?
            .map_err(anyhow::Error::msg)?;
        let mut line = String::new();
        let read = tokio::task::block_in_place(|| from_followers.read_line(&mut line))
            .context("reading the followers' report")?;
        let elapsed = start.elapsed();
        if read == 0 {
            bail!("the followers' process ended without a report");
        }
        // The leader's own share: rank 0, and the ring through every rank.
        let own = &plan.plan;
        if own.ranks.len() != 1
            || own.rank(0).map(|r| r.host.as_str()) != Some("node0")
            || own.rings.first().map(Vec::len) != Some(nodes as usize)
        {
            bail!("the leader's own share is not rank 0 with the ring");
        }
        let want = format!(
            "{} {} {} {}",
            plan.generation,
            plan.store,
            plan.secret,
            nodes - 1
        );
        match line.trim().strip_prefix("ok ") {
            Some(got) if got == want => {}
            Some(got) => {
                bail!("the followers' shares ({got}) differ from the leader's plan ({want})")
            }
            None => bail!("the followers: {}", line.trim()),
        }
        let phases = gang::LAST_PHASES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .filter(|p| p.nodes == nodes as usize)
            .context("the leader recorded no phases")?;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{nodes} nodes, step {step}: plan on every node after {:.1} ms (joins {:.1} ms, planning {:.1} ms, distribution {:.1} ms); the leader's peak memory {} MiB",
            ms(elapsed),
            ms(phases.joins),
            ms(phases.planning),
            ms(elapsed.saturating_sub(phases.joins + phases.planning)),
            peak_rss_mib()
        );
        times.push(elapsed);
    }
    drop(to_followers);
    let _ = followers.wait();
    times.sort();
    println!(
        "{nodes} nodes: median {:.1} ms over {repeats} runs",
        times[times.len() / 2].as_secs_f64() * 1e3
    );
    Ok(())
}

/// The followers' process: for each step number read on stdin, nodes 1..N join the leader at
/// `leader` at once; prints `ok GENERATION STORE SECRET RANKS` once every one holds its share
/// and they agree, else what went wrong.
pub(crate) async fn followers(nodes: u32, leader: SocketAddr) -> Result<()> {
    open_files(u64::from(nodes) + 256, nodes)?;
    let key = Arc::new(KEY.to_vec());
    let (_topology_tx, topology) = watch::channel(None);
    let mut peer_nodes = BTreeMap::new();
    peer_nodes.insert("node0".to_owned(), leader);
    let context = |node: u32| NodeContext {
        node: format!("node{node}"),
        topology: topology.clone(),
        key: Arc::clone(&key),
        peer_nodes: peer_nodes.clone(),
        peer_port: leader.port(),
    };
    let names: Vec<String> = (0..nodes).map(|n| format!("node{n}")).collect();
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        if tokio::task::block_in_place(|| stdin.lock().read_line(&mut line))? == 0 {
            return Ok(());
        }
        let step: u32 = line.trim().parse().context("a step number")?;
        let joins: Vec<_> = (1..nodes)
            .map(|node| tokio::spawn(gang::follow(context(node), request(&names, node, step))))
            .collect();
        let mut shares: Vec<StepPlan> = Vec::with_capacity(joins.len());
        let mut failed = None;
        for join in joins {
            match join.await? {
                Ok(share) => shares.push(share),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        let report = match (failed, shares.first()) {
            (Some(e), _) => format!("a follower failed: {e}"),
            (None, None) => "no follower".to_owned(),
            (None, Some(first)) => {
                let agree = shares.iter().all(|s| {
                    (s.generation, &s.store, &s.secret, s.plan.world_size())
                        == (first.generation, &first.store, &first.secret, nodes)
                });
                match (
                    agree,
                    tally(shares.iter().flat_map(|s| s.plan.ranks.iter())),
                ) {
                    (false, _) => "the followers got different rendezvous".to_owned(),
                    (true, (_, Some(rank))) => format!("rank {rank} is on another node's share"),
                    (true, (count, None)) => format!(
                        "ok {} {} {} {count}",
                        first.generation, first.store, first.secret
                    ),
                }
            }
        };
        println!("{report}");
    }
}

/// This process's peak resident memory (`VmHWM`), MiB.
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}
