//! cohortd as a process: configuration checks, the socket API (handshake, topology, status,
//! protocol errors), a second daemon on the same socket, SIGHUP and SIGTERM.

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cohort_proto::daemon::{ErrorCode, Request, Response, API_VERSION};
use cohort_proto::frame::{read_frame, write_frame};

const COHORTD: &str = env!("CARGO_BIN_EXE_cohortd");

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology/test_data/1s-2gpu-rails-roce.hwloc.xml")
}

/// A fresh cluster key file (mode 0600) in `dir`.
fn key(dir: &Path) -> PathBuf {
    let path = dir.join("cluster.key");
    if !path.exists() {
        let out = Command::new(COHORTD)
            .arg("--gen-key")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        Daemon::start_with("")
    }

    /// A daemon whose configuration ends with `extra` (a `[limits]` table, say).
    fn start_with(extra: &str) -> Daemon {
        Daemon::start_in(tempfile::tempdir().unwrap(), &fixture(), extra)
    }

    /// A daemon in `dir` whose topology comes from `topology`.
    fn start_in(dir: tempfile::TempDir, topology: &Path, extra: &str) -> Daemon {
        let socket = dir.path().join("run/cohortd.sock");
        let config = dir.path().join("cohortd.toml");
        std::fs::write(
            &config,
            format!(
                "socket = {:?}\n[peer]\nlisten = \"127.0.0.1\"\nport = {}\nkey_file = {:?}\n[topology]\nsource = {:?}\n{extra}",
                socket.display().to_string(),
                free_port(),
                key(dir.path()).display().to_string(),
                topology.display().to_string()
            ),
        )
        .unwrap();
        let child = Command::new(COHORTD)
            .arg("--config")
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while UnixStream::connect(&socket).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "cohortd did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            child,
            socket,
            _dir: dir,
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            signal,
        )
        .unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect(socket: &Path, version: u32) -> (UnixStream, Response) {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write_frame(
        &mut stream,
        &Request::Hello {
            api_version: version,
            client: "test".into(),
        },
    )
    .unwrap();
    let hello = read_frame(&mut stream).unwrap();
    (stream, hello)
}

#[test]
fn check_config_accepts_good_files_and_names_what_is_wrong_in_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let key_line = format!(
        "[peer]\nkey_file = {:?}\n",
        key(dir.path()).display().to_string()
    );
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "{key_line}[topology]\nsource = {:?}\n",
            fixture().display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(COHORTD)
        .arg("--config")
        .arg(&good)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "socket = \"/tmp/x.sock\"\n[peer]\nprot = 7\n").unwrap();
    let out = Command::new(COHORTD)
        .arg("--config")
        .arg(&bad)
        .arg("--check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("bad.toml") && err.contains("line 3") && err.contains("prot"),
        "{err}"
    );

    let missing = dir.path().join("missing.toml");
    std::fs::write(
        &missing,
        format!("{key_line}[topology]\nsource = \"/nonexistent/topo.xml\"\n"),
    )
    .unwrap();
    let out = Command::new(COHORTD)
        .arg("--config")
        .arg(&missing)
        .arg("--check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("/nonexistent/topo.xml: cannot read"), "{err}");

    let out = Command::new(COHORTD)
        .arg("--config")
        .arg(dir.path().join("absent.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_socket_serves_topology_and_status_after_a_handshake() {
    let daemon = Daemon::start();
    let (mut stream, hello) = connect(&daemon.socket, API_VERSION);
    assert!(
        matches!(
            hello,
            Response::Hello {
                api_version: API_VERSION,
                ..
            }
        ),
        "{hello:?}"
    );
    write_frame(&mut stream, &Request::GetTopology).unwrap();
    let Response::Topology(doc) = read_frame(&mut stream).unwrap() else {
        panic!("no topology")
    };
    assert_eq!(doc.hostname.as_deref(), Some("rails-node"));
    assert_eq!(doc.gpus.len(), 2);
    assert_eq!(doc.assignment[0].nics, ["mlx5_0", "mlx5_1"]);
    write_frame(&mut stream, &Request::GetStatus).unwrap();
    let Response::Status(status) = read_frame(&mut stream).unwrap() else {
        panic!("no status")
    };
    assert_eq!(
        status.topology_summary,
        "1 NUMA node(s), 2 GPU(s), 3 RDMA NIC(s)"
    );
    assert!(status
        .topology_source
        .ends_with("1s-2gpu-rails-roce.hwloc.xml"));

    // The CLI shows the same, when it was built beside the daemon.
    let cohort = Path::new(COHORTD).with_file_name("cohort");
    if cohort.exists() {
        let out = Command::new(&cohort)
            .arg("status")
            .arg("--socket")
            .arg(&daemon.socket)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("2 GPU(s)") && text.contains("cohortd 0.1.0 on rails-node"),
            "{text}"
        );
        let out = Command::new(&cohort)
            .args(["topo", "--daemon", "--json", "--socket"])
            .arg(&daemon.socket)
            .output()
            .unwrap();
        let doc = cohort_proto::topology::TopologyDoc::from_json(&out.stdout).unwrap();
        assert_eq!(doc.nics.len(), 3);
    } else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: the cohort CLI check ({} is not built)",
            cohort.display()
        );
    }
}

#[test]
fn protocol_errors_are_answered_and_do_not_hurt_the_daemon() {
    let daemon = Daemon::start();
    let (_, answer) = connect(&daemon.socket, API_VERSION + 1);
    assert!(
        matches!(
            answer,
            Response::Error {
                code: ErrorCode::VersionMismatch,
                ..
            }
        ),
        "{answer:?}"
    );

    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    write_frame(&mut stream, &Request::GetStatus).unwrap();
    let answer: Response = read_frame(&mut stream).unwrap();
    assert!(
        matches!(
            answer,
            Response::Error {
                code: ErrorCode::BadRequest,
                ..
            }
        ),
        "{answer:?}"
    );

    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    use std::io::Write;
    stream
        .write_all(&[5, 0, 0, 0, b'{', b'x', b'x', b'x', b'x'])
        .unwrap();
    let answer: Response = read_frame(&mut stream).unwrap();
    assert!(
        matches!(
            answer,
            Response::Error {
                code: ErrorCode::BadRequest,
                ..
            }
        ),
        "{answer:?}"
    );

    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream.write_all(&u32::MAX.to_le_bytes()).unwrap();
    let answer: Response = read_frame(&mut stream).unwrap();
    assert!(
        matches!(
            answer,
            Response::Error {
                code: ErrorCode::BadRequest,
                ..
            }
        ),
        "{answer:?}"
    );

    // Still serving.
    let (_, hello) = connect(&daemon.socket, API_VERSION);
    assert!(matches!(hello, Response::Hello { .. }));
}

#[test]
fn a_second_daemon_refuses_a_live_socket_and_sigterm_stops_cleanly() {
    let mut daemon = Daemon::start();
    let config = daemon
        .socket
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("cohortd.toml");
    let second = Command::new(COHORTD)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another cohortd is already listening")
    );

    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(200));
    let (_, hello) = connect(&daemon.socket, API_VERSION);
    assert!(
        matches!(hello, Response::Hello { .. }),
        "serving after SIGHUP"
    );

    let started = Instant::now();
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let status = daemon.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(!daemon.socket.exists(), "the socket is removed");
}

#[test]
fn the_service_manager_hears_ready_once_the_socket_serves_and_stopping_at_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let socket = dir.path().join("run/cohortd.sock");
    let config = dir.path().join("cohortd.toml");
    std::fs::write(
        &config,
        format!(
            "socket = {:?}\n[peer]\nlisten = \"127.0.0.1\"\nport = {}\nkey_file = {:?}\n[topology]\nsource = {:?}\n",
            socket.display().to_string(),
            free_port(),
            key(dir.path()).display().to_string(),
            fixture().display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(COHORTD)
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("no READY=1 within 10 s");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "READY=1");
    let (_, hello) = connect(&socket, API_VERSION);
    assert!(
        matches!(hello, Response::Hello { .. }),
        "serving when ready"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let n = notify.recv(&mut buf).expect("no STOPPING=1");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "STOPPING=1");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn the_man_page_comes_from_the_same_definitions_as_help() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(COHORTD)
        .arg("--generate-man")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(dir.path().join("cohortd.8")).unwrap();
    assert!(page.contains(".TH cohortd 8"), "{page}");
    assert!(page.contains("\\-\\-check\\-config"), "{page}");
}

/// The daemon's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn status_works(socket: &Path) {
    let (mut stream, hello) = connect(socket, API_VERSION);
    assert!(matches!(hello, Response::Hello { .. }), "{hello:?}");
    write_frame(&mut stream, &Request::GetStatus).unwrap();
    let answer: Response = read_frame(&mut stream).unwrap();
    assert!(matches!(answer, Response::Status(_)), "{answer:?}");
}

/// A join that parses but cannot be acted on is refused naming the field (here the world size
/// of 0 that once took the gang actor down), and the daemon goes on starting real steps.
#[test]
fn an_inconsistent_join_is_refused_by_field_and_the_next_step_starts() {
    use cohort_proto::daemon::JoinRequest;
    let daemon = Daemon::start();
    let join = |world_size: u32, ranks: Vec<u32>| JoinRequest {
        job_id: 5,
        step_id: 0,
        attempt: 0,
        nodes: vec!["node0".into()],
        node_index: 0,
        ranks,
        world_size,
        gpus: vec![],
        gpu_ids: Vec::new(),
        topology_addr: None,
        timeout_ms: 5000,
        store_port: None,
        uid: 0,
    };
    let (mut stream, _) = connect(&daemon.socket, API_VERSION);
    write_frame(&mut stream, &Request::Join(join(0, vec![]))).unwrap();
    match read_frame::<Response>(&mut stream).unwrap() {
        Response::Error {
            code: ErrorCode::BadRequest,
            message,
        } => assert!(message.contains("world_size"), "{message}"),
        other => panic!("{other:?}"),
    }
    let (mut stream, _) = connect(&daemon.socket, API_VERSION);
    write_frame(&mut stream, &Request::Join(join(1, vec![0]))).unwrap();
    let answer: Response = read_frame(&mut stream).unwrap();
    assert!(matches!(answer, Response::Joined(_)), "{answer:?}");
}

/// A thousand idle connections and a client stalled half-way through a frame: others are
/// served meanwhile, the daemon's memory stays bounded, and the idle ones are closed at the
/// idle timeout.
#[test]
fn idle_and_stalled_clients_neither_block_others_nor_grow_memory() {
    use std::io::{Read, Write};
    // The test holds a thousand sockets of its own.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    if hard < 1200 {
        eprintln!("skipped: the file descriptor limit ({hard}) is below what the test needs");
        return;
    }
    let daemon = Daemon::start_with("[limits]\nidle_timeout = 3\n");
    let before = rss_kib(daemon.child.id());
    // A client that announces a 4 MiB frame, sends 10 bytes and stalls.
    let mut stalled = UnixStream::connect(&daemon.socket).unwrap();
    stalled.write_all(&(4u32 << 20).to_le_bytes()).unwrap();
    stalled.write_all(b"{\"type\":\"h").unwrap();
    let idle: Vec<UnixStream> = (0..1000)
        .map(|_| UnixStream::connect(&daemon.socket).unwrap())
        .collect();
    let start = Instant::now();
    status_works(&daemon.socket);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let during = rss_kib(daemon.child.id());
    assert!(
        during < before + 32 * 1024,
        "1000 idle connections grew the daemon from {before} KiB to {during} KiB"
    );
    // At the idle timeout the daemon closes them (a read sees the end, or the stalled one an
    // error frame at most).
    std::thread::sleep(Duration::from_secs(4));
    let mut closed = 0;
    for mut stream in idle.into_iter().chain([stalled]) {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut rest = Vec::new();
        if stream.read_to_end(&mut rest).is_ok() {
            closed += 1;
        }
    }
    assert_eq!(closed, 1001);
    status_works(&daemon.socket);
}

/// One user other than root holds at most `max_connections_per_user` connections; beyond it
/// they are told the daemon is busy, while root (the plugin) is still served.
#[test]
fn a_user_cannot_crowd_out_root() {
    use std::os::unix::process::CommandExt;
    if !running_as_root() {
        return;
    }
    let daemon = Daemon::start_with("[limits]\nmax_connections_per_user = 5\n");
    // As nobody: open 20 connections and keep them, then report how each first answer went.
    let script = r#"
import socket, struct, sys, json
held, busy = [], 0
for _ in range(20):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); held.append(s)
hello = json.dumps({"type": "hello", "api_version": int(sys.argv[2]), "client": "crowd"}).encode()
for s in held:
    try:
        s.sendall(struct.pack('<I', len(hello)) + hello)
        n = struct.unpack('<I', s.recv(4, socket.MSG_WAITALL))[0]
        if b'"busy"' in s.recv(n, socket.MSG_WAITALL): busy += 1
    except OSError:
        busy += 1
print(busy, flush=True)
sys.stdin.read()
"#;
    let mut crowd = Command::new("python3")
        .args(["-c", script])
        .arg(&daemon.socket)
        .arg(API_VERSION.to_string())
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(crowd.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "15", "refused connections of nobody");
    status_works(&daemon.socket);
    drop(crowd.stdin.take());
    crowd.wait().unwrap();
}

fn running_as_root() -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        eprintln!("skipped: acting as another user needs root");
    }
    root
}

/// Rediscovery that does not finish (here the topology file is a FIFO no one writes after the
/// first discovery) neither stops the daemon from serving nor from stopping at SIGTERM.
#[test]
fn a_stuck_rediscovery_neither_blocks_serving_nor_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("topology.xml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // The first discovery reads the file once.
    let content = std::fs::read(fixture()).unwrap();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(&fifo, content).unwrap())
    };
    let mut daemon = Daemon::start_in(dir, &fifo, "");
    writer.join().unwrap();
    status_works(&daemon.socket);
    // The second waits for a writer that never comes.
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    status_works(&daemon.socket);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let started = Instant::now();
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let status = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status;
        }
        // (Dropping the daemon kills it, so a failure here leaves nothing running.)
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "cohortd did not stop within 8 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}
