//! The daemon's life: discover, bind the socket, serve, rediscover on SIGHUP, and on SIGTERM or
//! SIGINT stop accepting, give open connections a grace period, and remove the socket.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn, Instrument};

use cohort_topology::gpu_sample::{GpuSampler, NvmlSampler, ScriptedSampler};

use crate::accounting::Accounts;
use crate::api::{self, Shared};
use crate::config::{Config, TopologySource};
use crate::{gang, limits, top, topo};

/// After a failed accept (out of file descriptors, say), waits a moment rather than spinning.
async fn accept_failed(what: &str, e: &std::io::Error) {
    warn!("{what} failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// How long open connections get to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(5);

/// Binds the socket, replacing a stale one but never a live daemon's.
fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{}: another cohortd is already listening", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    // Everyone may connect: topology and health are public, and job operations check the
    // caller's uid (SO_PEERCRED) themselves.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}

/// The GPU sampler the configuration asks for: a script, or NVML.
fn sampler(settings: &crate::config::Accounting) -> Result<Box<dyn GpuSampler>, String> {
    match &settings.scripted_gpus {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let script = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not a GPU sample script: {e}", path.display()))?;
            info!(script = %path.display(), "GPU accounting replays scripted samples, not NVML");
            Ok(Box::new(ScriptedSampler::new(script)))
        }
        None => Ok(Box::new(NvmlSampler::new()?)),
    }
}

/// Samples every GPU of the node every `interval`, off the runtime's threads (NVML blocks):
/// the latest sample of each for `cohort top`, and those of running steps into their
/// accounts; logs what is newly flagged, and Xid errors of GPUs no step holds.
async fn account_gpus(
    sampler: Box<dyn GpuSampler>,
    accounts: Arc<std::sync::Mutex<Accounts>>,
    gang: tokio::sync::mpsc::Sender<gang::GangCommand>,
    topology: watch::Receiver<Option<Arc<topo::Snapshot>>>,
    interval: Duration,
) {
    let sampler = Arc::new(std::sync::Mutex::new(sampler));
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (respond, answer) = tokio::sync::oneshot::channel();
        if gang
            .send(gang::GangCommand::RunningGpus { respond })
            .await
            .is_err()
        {
            return;
        }
        let Ok(running) = answer.await else { return };
        let gpus: Vec<(u32, String)> = topology
            .borrow()
            .as_ref()
            .map(|s| {
                s.topology
                    .gpus
                    .iter()
                    .map(|g| (g.index, g.bus_id.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let in_use: std::collections::BTreeSet<u32> = running
            .iter()
            .flat_map(|(_, _, gpus)| gpus.iter().map(|(gpu, _)| *gpu))
            .collect();
        let sampler = Arc::clone(&sampler);
        let (unclaimed, sampled) = tokio::task::spawn_blocking(move || {
            let mut sampler = sampler
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let unclaimed = sampler.begin_round();
            let sampled: Vec<_> = gpus
                .into_iter()
                .map(|(gpu, bus_id)| {
                    let sample = sampler.sample(&bus_id, in_use.contains(&gpu));
                    (gpu, bus_id, sample)
                })
                .collect();
            (unclaimed, sampled)
        })
        .await
        .unwrap_or_default();
        let now = crate::accounting::now();
        let keys: Vec<gang::StepKey> = running.iter().map(|(key, _, _)| *key).collect();
        let mut accounts = accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        accounts.retain(&keys, now);
        for (gpu, bus_id, sample) in sampled {
            accounts.observe(gpu, &bus_id, &sample);
            let mut held = false;
            for (key, uid, gpus) in &running {
                for &(index, number) in gpus.iter().filter(|(index, _)| *index == gpu) {
                    held = true;
                    for flag in accounts.record(*key, *uid, (index, number), &bus_id, &sample, now)
                    {
                        warn!("{flag}");
                    }
                }
            }
            if let (false, Ok(sample)) = (held, &sample) {
                for xid in &sample.xids {
                    warn!("GPU {bus_id} reported Xid {xid} while no step of this node used it");
                }
            }
        }
        for (bus_id, xid) in unclaimed {
            warn!("GPU {bus_id} reported Xid {xid}, and the topology has no such GPU");
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT; `key` is the cluster key.
pub(crate) async fn run(config: Config, key: Vec<u8>) -> Result<()> {
    let started = Instant::now();
    // The NCCL topology file goes beside the socket (a directory every user can read).
    let export_dir = config.socket.parent().map(Path::to_path_buf);
    let first = topo::discover_async(config.topology.clone(), export_dir.clone()).await;
    let snapshot = match (first, &config.topology) {
        (Ok(snapshot), _) => {
            info!(source = %snapshot.source, summary = %snapshot.summary, "topology discovered");
            Some(snapshot)
        }
        // A topology file that does not load is a configuration error.
        (Err(e), TopologySource::File(path)) => bail!("topology file {}: {e}", path.display()),
        // Live discovery failing removes the topology, not the daemon.
        (Err(e), TopologySource::Live) => {
            error!("topology discovery failed: {e}; serving without a topology");
            None
        }
    };
    let (topology_tx, topology_rx) = watch::channel(snapshot);
    let listener = bind(&config.socket)?;
    info!(socket = %config.socket.display(), "listening");
    let peer_listener = gang::peer_listener((config.peer_listen, config.peer_port).into())
        .with_context(|| {
            format!(
                "listening for peers on {}:{}",
                config.peer_listen, config.peer_port
            )
        })?;
    info!(address = %format!("{}:{}", config.peer_listen, config.peer_port), "listening for peers");
    let key = Arc::new(key);
    let node = gang::NodeContext {
        node: config.node_name.clone().unwrap_or_else(hostname),
        topology: topology_rx.clone(),
        key: Arc::clone(&key),
        peer_nodes: config.peer_nodes.clone(),
        peer_port: config.peer_port,
    };
    let (gang_tx, gang_rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(
        gang::run(node.clone(), gang_rx).instrument(tracing::info_span!("gang", node = %node.node)),
    );
    let ticker = gang_tx.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(100));
        loop {
            interval.tick().await;
            if ticker.send(gang::GangCommand::Tick).await.is_err() {
                break;
            }
        }
    });
    let accounts = Arc::new(std::sync::Mutex::new(Accounts::new(
        config.accounting.clone(),
    )));
    if config.accounting.interval > 0 {
        match sampler(&config.accounting) {
            Ok(sampler) => {
                tokio::spawn(account_gpus(
                    sampler,
                    Arc::clone(&accounts),
                    gang_tx.clone(),
                    topology_rx.clone(),
                    Duration::from_secs(config.accounting.interval),
                ));
            }
            Err(e) => info!("GPU accounting off: {e}"),
        }
    }
    let shared = Arc::new(Shared {
        started,
        topology: topology_rx,
        gang: gang_tx.clone(),
        node,
        idle: config.limits.idle_timeout,
        accounts,
    });

    // Rediscovery runs in a task of its own, so that the daemon keeps accepting connections
    // and handling SIGTERM meanwhile; SIGHUPs during one ask for one more afterwards.
    let (rediscover, mut rediscover_requests) = tokio::sync::mpsc::channel::<()>(1);
    let source = config.topology.clone();
    tokio::spawn(async move {
        while rediscover_requests.recv().await.is_some() {
            match topo::discover_async(source.clone(), export_dir.clone()).await {
                Ok(snapshot) => {
                    info!(summary = %snapshot.summary, "topology rediscovered");
                    topology_tx.send_replace(Some(snapshot));
                }
                Err(e) => error!("rediscovery failed, keeping the previous topology: {e}"),
            }
        }
    });
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut connections = JoinSet::new();
    let admission = limits::Admission::new(config.limits);
    let mut next_id: u64 = 0;
    // Ready (systemd's Type=notify): topology discovered, both sockets listening, signals
    // handled.
    notify(&[sd_notify::NotifyState::Ready]);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    next_id += 1;
                    let uid = stream.peer_cred().map(|c| c.uid()).ok();
                    match admission.admit(uid) {
                        Ok(ticket) => {
                            let span = tracing::info_span!("conn", id = next_id, peer_uid = ?uid);
                            let shared = Arc::clone(&shared);
                            connections.spawn(async move {
                                api::serve(stream, shared).await;
                                drop(ticket);
                            }.instrument(span));
                        }
                        Err(message) => {
                            debug!(peer_uid = ?uid, "refused a connection: {message}");
                            limits::refuse(&stream, &message);
                        }
                    }
                }
                Err(e) => accept_failed("accept", &e).await,
            },
            accepted = peer_listener.accept() => match accepted {
                Ok((stream, from)) => match admission.admit_peer() {
                    Some(ticket) => {
                        let span = tracing::info_span!("peer", from = %from);
                        let (key, gang_tx) = (Arc::clone(&key), gang_tx.clone());
                        let shared = Arc::clone(&shared);
                        connections.spawn(async move {
                            let name: Arc<str> = Arc::from(shared.node.node.as_str());
                            if let Some((mut stream, asker)) = gang::serve_peer(stream, key, name, gang_tx).await {
                                let answer = top::local(&shared.node, &shared.accounts, &shared.gang, asker).await;
                                if let Err(e) = crate::peer::send(&mut stream, &cohort_proto::peer::PeerMsg::Top(Box::new(answer))).await {
                                    warn!("peer {from}: {e}");
                                }
                            }
                            drop(ticket);
                        }.instrument(span));
                    }
                    None => warn!(from = %from, "refused a peer connection: too many open"),
                },
                Err(e) => accept_failed("peer accept", &e).await,
            },
            _ = hangup.recv() => {
                info!("SIGHUP: rediscovering the topology");
                let _ = rediscover.try_send(());
            },
            _ = terminate.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = interrupt.recv() => { info!("SIGINT: shutting down"); break; }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    drop(listener);
    let _ = std::fs::remove_file(&config.socket);
    if tokio::time::timeout(GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        warn!(
            "{} connection(s) still open after the grace period; closing them",
            connections.len()
        );
        connections.abort_all();
    }
    info!("stopped");
    Ok(())
}

/// Tells the service manager how the daemon stands, when one asked (`NOTIFY_SOCKET`).
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        warn!("cannot notify the service manager: {e}");
    }
}
