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
        let dir = tempfile::tempdir().unwrap();
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
