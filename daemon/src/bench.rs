//! `cohortd --bench-gang N`: the gang start of one step across N simulated nodes in this
//! process, through the real code (peer listener, handshakes, the actor, placement, the plan):
//! one leader and N-1 follower tasks on loopback, each with its own node name. Prints the time
//! from the first join to the last node holding the plan.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cohort_proto::daemon::JoinRequest;
use tokio::sync::{mpsc, oneshot, watch};

use crate::gang::{self, GangCommand, NodeContext};

/// Runs the benchmark for `nodes` nodes, `repeats` times, and prints each figure and the median.
pub(crate) async fn gang(nodes: u32, repeats: u32) -> Result<()> {
    if nodes < 2 {
        bail!("--bench-gang needs at least 2 nodes");
    }
    let key = Arc::new(b"bench-cluster-key-0123456789abcdef".to_vec());
    let listener = gang::peer_listener(([127, 0, 0, 1], 0).into())?;
    let address = listener.local_addr()?;
    let (_topology_tx, topology) = watch::channel(None);
    let mut peer_nodes = BTreeMap::new();
    peer_nodes.insert("node0".to_owned(), address);
    let context = |node: u32| NodeContext {
        node: format!("node{node}"),
        topology: topology.clone(),
        key: Arc::clone(&key),
        peer_nodes: peer_nodes.clone(),
        peer_port: address.port(),
    };
    let (commands, receiver) = mpsc::channel(4096);
    tokio::spawn(gang::run(context(0), receiver));
    let accept_commands = commands.clone();
    let accept_key = Arc::clone(&key);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(gang::serve_peer(
                stream,
                Arc::clone(&accept_key),
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
    let names: Vec<String> = (0..nodes).map(|n| format!("node{n}")).collect();
    let mut times = Vec::new();
    for step in 0..repeats {
        let request = |node: u32| JoinRequest {
            job_id: 1,
            step_id: step,
            attempt: 0,
            nodes: names.clone(),
            node_index: node,
            ranks: vec![node],
            world_size: nodes,
            gpus: vec![],
            gpu_ids: Vec::new(),
            topology_addr: None,
            timeout_ms: 120_000,
            store_port: None,
            uid: 0,
        };
        let start = Instant::now();
        let (respond, leader) = oneshot::channel();
        commands
            .send(GangCommand::LeaderJoin {
                request: request(0),
                respond,
            })
            .await
            .context("the gang actor stopped")?;
        let followers: Vec<_> = (1..nodes)
            .map(|node| tokio::spawn(gang::follow(context(node), request(node))))
            .collect();
        let plan = leader
            .await
            .context("no answer")?
            .map_err(anyhow::Error::msg)?;
        for follower in followers {
            let theirs = follower.await?.map_err(anyhow::Error::msg)?;
            if theirs != plan {
                bail!("a follower got a different plan");
            }
        }
        let elapsed = start.elapsed();
        println!(
            "{nodes} nodes, step {step}: plan on every node after {:.1} ms",
            elapsed.as_secs_f64() * 1e3
        );
        times.push(elapsed);
    }
    times.sort();
    println!(
        "{nodes} nodes: median {:.1} ms over {repeats} runs",
        times[times.len() / 2].as_secs_f64() * 1e3
    );
    Ok(())
}
