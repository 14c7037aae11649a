//! Gang start between real cohortd processes on loopback: every node gets the same plan; a
//! dead node fails the step on the others at the deadline, named; a node without the cluster
//! key is refused.

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cohort_proto::daemon::{ErrorCode, JoinRequest, Request, Response, StepPlan, API_VERSION};
use cohort_proto::frame::{read_frame, write_frame};

const COHORTD: &str = env!("CARGO_BIN_EXE_cohortd");

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology/test_data/1s-2gpu-rails-roce.hwloc.xml")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Cluster {
    daemons: Vec<Option<Child>>,
    sockets: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` daemons named node0..; `bad_key` gives one of them a different key.
    fn start(n: usize, bad_key: Option<usize>) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let good_key = dir.path().join("cluster.key");
        let other_key = dir.path().join("other.key");
        for key in [&good_key, &other_key] {
            assert!(Command::new(COHORTD)
                .arg("--gen-key")
                .arg(key)
                .status()
                .unwrap()
                .success());
        }
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let nodes: String = ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("node{i} = \"127.0.0.1:{port}\"\n"))
            .collect();
        let mut daemons = Vec::new();
        let mut sockets = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let socket = dir.path().join(format!("node{i}.sock"));
            let key = if bad_key == Some(i) {
                &other_key
            } else {
                &good_key
            };
            let config = dir.path().join(format!("node{i}.toml"));
            std::fs::write(
                &config,
                format!(
                    "socket = {:?}\nnode_name = \"node{i}\"\n[peer]\nlisten = \"127.0.0.1\"\nport = {port}\nkey_file = {:?}\n[peer.nodes]\n{nodes}[topology]\nsource = {:?}\n",
                    socket.display().to_string(),
                    key.display().to_string(),
                    fixture().display().to_string()
                ),
            )
            .unwrap();
            let child = Command::new(COHORTD)
                .arg("--config")
                .arg(&config)
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            daemons.push(Some(child));
            sockets.push(socket);
        }
        let started = Instant::now();
        for socket in &sockets {
            while UnixStream::connect(socket).is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "cohortd did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Cluster {
            daemons,
            sockets,
            _dir: dir,
        }
    }

    fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.daemons[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Joins step `job`.0 on the given nodes at once (2 ranks per node, GPUs 0 and 1).
    fn join(
        &self,
        job: u32,
        nodes: &[usize],
        all: usize,
        timeout_ms: u64,
    ) -> Vec<Result<StepPlan, (ErrorCode, String)>> {
        self.join_attempt(job, 0, nodes, all, timeout_ms)
    }

    /// Like `join`, for a given launch attempt of the step.
    fn join_attempt(
        &self,
        job: u32,
        attempt: u32,
        nodes: &[usize],
        all: usize,
        timeout_ms: u64,
    ) -> Vec<Result<StepPlan, (ErrorCode, String)>> {
        let names: Vec<String> = (0..all).map(|i| format!("node{i}")).collect();
        let threads: Vec<_> = nodes
            .iter()
            .map(|&i| {
                let socket = self.sockets[i].clone();
                let request = JoinRequest {
                    job_id: job,
                    step_id: 0,
                    attempt,
                    nodes: names.clone(),
                    node_index: u32::try_from(i).unwrap(),
                    ranks: vec![
                        2 * u32::try_from(i).unwrap(),
                        2 * u32::try_from(i).unwrap() + 1,
                    ],
                    world_size: 2 * u32::try_from(all).unwrap(),
                    gpus: vec![0, 1],
                    gpu_ids: Vec::new(),
                    topology_addr: None,
                    timeout_ms,
                    store_port: None,
                    uid: 0,
                };
                std::thread::spawn(move || {
                    let mut stream = UnixStream::connect(&socket).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    write_frame(
                        &mut stream,
                        &Request::Hello {
                            api_version: API_VERSION,
                            client: "test".into(),
                        },
                    )
                    .unwrap();
                    let _: Response = read_frame(&mut stream).unwrap();
                    write_frame(&mut stream, &Request::Join(request)).unwrap();
                    match read_frame(&mut stream).unwrap() {
                        Response::Joined(plan) => Ok(*plan),
                        Response::Error { code, message } => Err((code, message)),
                        other => panic!("unexpected {other:?}"),
                    }
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in 0..self.daemons.len() {
            self.kill(node);
        }
    }
}

/// Every node gets its share of one plan (its own ranks), with the same rendezvous; the node
/// of rank 0 also the ring order: what a node receives does not grow with the job.
#[test]
fn every_node_gets_its_share_of_one_plan() {
    let cluster = Cluster::start(3, None);
    let results = cluster.join(11, &[0, 1, 2], 3, 5000);
    let plans: Vec<StepPlan> = results.into_iter().map(|r| r.unwrap()).collect();
    let plan = &plans[0];
    assert_eq!(plan.secret.len(), 64);
    assert!(plan.store.starts_with("127.0.0.1:"), "{}", plan.store);
    let mut all = Vec::new();
    for (node, share) in plans.iter().enumerate() {
        assert_eq!(
            (share.generation, &share.store, &share.secret),
            (plan.generation, &plan.store, &plan.secret),
            "the same rendezvous on every node"
        );
        assert!(share.plan.is_share());
        assert_eq!(share.plan.world_size(), 6);
        share.plan.check().unwrap();
        assert!(share
            .plan
            .ranks
            .iter()
            .all(|r| r.host == format!("node{node}")));
        // Only rank 0's node has the ring.
        assert_eq!(share.plan.rings.is_empty(), node != 0);
        all.extend(share.plan.ranks.iter().cloned());
    }
    all.sort_by_key(|r| r.rank);
    assert_eq!(all.len(), 6);
    for (rank, entry) in all.iter().enumerate() {
        assert_eq!(entry.rank as usize, rank);
        assert_eq!(entry.host, format!("node{}", rank / 2));
        assert_eq!(entry.gpu, Some(u32::try_from(rank % 2).unwrap()));
        assert_eq!(entry.gpu_number, Some(u32::try_from(rank).unwrap()));
        assert_eq!(entry.address, "127.0.0.1");
    }
    // The fixture node: GPU0 shares a switch with two HCAs (rails), GPU1 has the RoCE NIC.
    assert_eq!(all[0].nics, ["mlx5_0", "mlx5_1"]);
    assert_eq!(all[1].nics, ["mlx5_2"]);
    assert_eq!(plan.plan.rings, [vec![0, 1, 2, 3, 4, 5]]);

    // A requeued job launches the step again: a new attempt, a new plan and secret; the old
    // attempt is over, and joining it again is refused.
    let again: Vec<StepPlan> = cluster
        .join_attempt(11, 1, &[0, 1, 2], 3, 5000)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(again[0].generation, 1);
    assert_eq!(again[2].secret, again[0].secret);
    assert_ne!(again[0].secret, plans[0].secret);
    let stale = cluster.join_attempt(11, 0, &[0], 3, 1000);
    assert!(
        stale[0].as_ref().unwrap_err().1.contains("already started"),
        "{stale:?}"
    );
}

#[test]
fn a_missing_node_fails_the_step_everywhere_naming_it() {
    let mut cluster = Cluster::start(3, None);
    cluster.kill(2);
    let started = Instant::now();
    let results = cluster.join(12, &[0, 1], 3, 1500);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    for result in results {
        let (code, message) = result.unwrap_err();
        assert_eq!(code, ErrorCode::GangFailed);
        assert!(
            message.contains("nodes missing at the deadline") && message.contains("node2"),
            "{message}"
        );
    }
    // The healthy nodes still serve the next step.
    let plans = cluster.join(13, &[0, 1], 2, 5000);
    assert!(plans.iter().all(Result::is_ok), "{plans:?}");
}

#[test]
fn a_node_without_the_cluster_key_is_refused() {
    let cluster = Cluster::start(2, Some(1));
    let results = cluster.join(14, &[0, 1], 2, 1500);
    let (_, leader) = results[0].clone().unwrap_err();
    assert!(leader.contains("node1"), "{leader}");
    let (_, follower) = results[1].clone().unwrap_err();
    assert!(follower.contains("leader node0"), "{follower}");
}

#[test]
fn the_gang_benchmark_runs_the_real_protocol() {
    let out = Command::new(COHORTD)
        .args(["--bench-gang", "256", "--repeats", "2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("256 nodes, step 1: plan on every node after"),
        "{text}"
    );
    assert!(text.contains("256 nodes: median"), "{text}");
    assert!(
        text.contains("joins") && text.contains("distribution"),
        "{text}"
    );
}

/// The attacks of a local user who talks to cohortd directly, with a client speaking the
/// documented framing (Python, run as `nobody`): a join of someone else's job, a join of a job
/// claiming to own it (the request's uid is the caller's), a join with world size 0, a task
/// report. All are refused, and the real step of that job then starts on the node.
#[test]
fn another_user_cannot_start_steal_or_stall_a_step() {
    use std::os::unix::process::CommandExt;
    if running_as_root().is_none() {
        return;
    }
    let cluster = Cluster::start(2, None);
    // The attacker's joins name the same step the real one will be.
    let join = |uid: u32, world_size: u32, ranks: Vec<u32>| {
        serde_json::to_string(&Request::Join(JoinRequest {
            job_id: 99,
            step_id: 0,
            attempt: 0,
            nodes: vec!["node0".into(), "node1".into()],
            node_index: 0,
            ranks,
            world_size: world_size * 2,
            gpus: vec![],
            gpu_ids: Vec::new(),
            topology_addr: None,
            timeout_ms: 1000,
            store_port: None,
            uid,
        }))
        .unwrap()
    };
    let exit = serde_json::to_string(&Request::TaskExit(cohort_proto::daemon::TaskExit {
        job_id: 99,
        step_id: 0,
        attempt: 0,
        rank: 0,
        status: 9,
        uid: 65534,
    }))
    .unwrap();
    let hello = serde_json::to_string(&Request::Hello {
        api_version: API_VERSION,
        client: "nobody".into(),
    })
    .unwrap();
    // A tiny client in Python (installed with the build tools), run as nobody: one
    // connection per request, each answer on a line.
    let script = r#"
import socket, struct, sys
def ask(m):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
    def send(m):
        b = m.encode(); s.sendall(struct.pack('<I', len(b)) + b)
    def recv():
        n = struct.unpack('<I', s.recv(4, socket.MSG_WAITALL))[0]; return s.recv(n, socket.MSG_WAITALL).decode()
    send(sys.argv[2]); recv(); send(m); print(recv(), flush=True)
for m in sys.argv[3:]:
    ask(m)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&cluster.sockets[0])
        .arg(&hello)
        .arg(join(0, 2, vec![0, 1]))
        .arg(join(65534, 2, vec![0, 1]))
        .arg(join(65534, 0, vec![]))
        .arg(&exit)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let answers = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = answers.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "{answers} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in &lines {
        assert!(line.contains("permission_denied"), "{answers}");
    }
    assert!(
        lines[0].contains("uid 65534 may not join job 99"),
        "{answers}"
    );
    assert!(
        lines[3].contains("may not report tasks of job 99"),
        "{answers}"
    );
    // The real step of job 99 starts on both nodes, as if nothing had happened.
    let plans = cluster.join(99, &[0, 1], 2, 5000);
    for plan in &plans {
        assert!(plan.is_ok(), "{plans:?}");
    }
}

/// `Some(())` when the tests run as root (needed to act as another user); prints why not.
fn running_as_root() -> Option<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"));
    if !root {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: acting as another user needs root"
        );
    }
    root.then_some(())
}

/// `cohort top --nodes`, through node0's daemon: node1, which holds the cluster key, answers
/// with its GPUs over the peer protocol; node2, with another key, is refused at the handshake
/// and named with the reason; a name that is no node name is refused by field.
#[test]
fn top_asks_the_peers_holding_the_key_and_names_those_it_cannot() {
    let cluster = Cluster::start(3, Some(2));
    let ask = |nodes: Vec<String>| -> Response {
        let mut stream = UnixStream::connect(&cluster.sockets[0]).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write_frame(
            &mut stream,
            &Request::Hello {
                api_version: API_VERSION,
                client: "test".into(),
            },
        )
        .unwrap();
        let _: Response = read_frame(&mut stream).unwrap();
        write_frame(&mut stream, &Request::GetTop { nodes }).unwrap();
        read_frame(&mut stream).unwrap()
    };
    let Response::Top { nodes: top } = ask(vec!["node1".into(), "node2".into()]) else {
        panic!("no top");
    };
    let names: Vec<&str> = top.iter().map(|n| n.node.as_str()).collect();
    assert_eq!(names, ["node0", "node1", "node2"]);
    assert!(!top[0].gpus.is_empty() && top[0].error.is_none());
    assert_eq!(top[1].error, None);
    assert_eq!(top[1].gpus.len(), top[0].gpus.len());
    assert!(top[1].gpus.iter().all(|g| !g.in_use && g.step.is_none()));
    assert!(
        top[2].error.is_some() && top[2].gpus.is_empty(),
        "{:?}",
        top[2]
    );
    match ask(vec!["no/de".into()]) {
        Response::Error { code, message } => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(message.contains("nodes[0]"), "{message}");
        }
        other => panic!("a bad node name was answered {other:?}"),
    }
}

/// A step whose joining process (slurmstepd, here a Python client standing in for it) is
/// killed before any of its tasks' ends is reported stops counting as running within a few
/// seconds, and the status says why, instead of holding the node's GPUs for ever.
#[test]
fn a_step_whose_slurmstepd_died_stops_counting_as_running() {
    if running_as_root().is_none() {
        // Only root may join a step.
        return;
    }
    let cluster = Cluster::start(1, None);
    let hello = serde_json::to_string(&Request::Hello {
        api_version: API_VERSION,
        client: "stepd".into(),
    })
    .unwrap();
    let join = serde_json::to_string(&Request::Join(JoinRequest {
        job_id: 41,
        step_id: 0,
        attempt: 0,
        nodes: vec!["node0".into()],
        node_index: 0,
        ranks: vec![0],
        world_size: 1,
        gpus: vec![0],
        gpu_ids: Vec::new(),
        topology_addr: None,
        timeout_ms: 5000,
        store_port: None,
        uid: 0,
    }))
    .unwrap();
    // Joins, says so, then stays until killed (as a slurmstepd whose tasks run).
    let script = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
def send(m):
    b = m.encode(); s.sendall(struct.pack('<I', len(b)) + b)
def recv():
    n = struct.unpack('<I', s.recv(4, socket.MSG_WAITALL))[0]; return s.recv(n, socket.MSG_WAITALL).decode()
send(sys.argv[2]); recv(); send(sys.argv[3]); print(recv()[:40], flush=True)
time.sleep(600)
"#;
    let mut stepd = Command::new("python3")
        .args(["-c", script])
        .arg(&cluster.sockets[0])
        .arg(&hello)
        .arg(&join)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(stepd.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains("joined"), "{line}");
    let steps = || -> Vec<String> {
        let mut stream = UnixStream::connect(&cluster.sockets[0]).unwrap();
        write_frame(
            &mut stream,
            &Request::Hello {
                api_version: API_VERSION,
                client: "test".into(),
            },
        )
        .unwrap();
        let _: Response = read_frame(&mut stream).unwrap();
        write_frame(&mut stream, &Request::GetStatus).unwrap();
        match read_frame(&mut stream).unwrap() {
            Response::Status(status) => status.steps,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(steps()[0].ends_with("running"), "{:?}", steps());
    stepd.kill().unwrap();
    stepd.wait().unwrap();
    let started = Instant::now();
    loop {
        let now = steps();
        if now[0].contains("its slurmstepd") {
            assert!(
                now[0].contains("went away without reporting its tasks' ends"),
                "{now:?}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still running: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
