//! `cohort run` and the collectives in real processes: the environment ranks get, fail-fast,
//! signal forwarding, every type over shared memory and TCP, and the fault cases (a killed
//! rank, a stopped rank, a bad environment), each with its time bound asserted.

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cohort_proto::plan::Plan;

const COHORT: &str = env!("CARGO_BIN_EXE_cohort");

/// These tests start many processes and assert time bounds: one at a time, so they do not
/// starve each other of this machine's cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `cohort` with runs recorded in a catalog of this test process's own, not the working
/// directory's.
fn cohort_command() -> Command {
    let mut command = Command::new(COHORT);
    command.env(
        "COHORT_CATALOG",
        std::env::temp_dir().join(format!("cohort-run-tests-{}", std::process::id())),
    );
    command
}

fn cohort(args: &[&str]) -> Output {
    cohort_command().args(args).output().expect("cohort runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn ranks_get_their_environment_and_a_plan() {
    let _serial = serial();
    let out = cohort(&[
        "run",
        "-n",
        "3",
        "--",
        "sh",
        "-c",
        "echo env $COHORT_RANK $COHORT_WORLD_SIZE $RANK $WORLD_SIZE $LOCAL_RANK $MASTER_ADDR; \
         echo store ${COHORT_STORE_FD:-none} $(ls -l /proc/$$/fd | grep -c socket:); cat $COHORT_PLAN",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for rank in 0..3 {
        assert!(
            stdout.contains(&format!("[{rank}] env {rank} 3 {rank} 3 {rank} 127.0.0.1")),
            "{stdout}"
        );
    }
    // Rank 0 alone inherits the store's socket, bound by `cohort run` (one socket open beside
    // none in the others).
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("[0] store ") && !l.contains("none") && l.ends_with(" 1")),
        "{stdout}"
    );
    for rank in 1..3 {
        assert!(
            stdout.contains(&format!("[{rank}] store none 0")),
            "{stdout}"
        );
    }
    let plan_text: String = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("[1] "))
        .filter(|line| !line.starts_with("env ") && !line.starts_with("store "))
        .collect::<Vec<_>>()
        .join("\n");
    let plan = Plan::from_json(plan_text.as_bytes()).unwrap();
    assert_eq!(plan.ranks.len(), 3);
    assert_eq!(plan.rings, [vec![0, 1, 2]]);
}

#[test]
fn ranks_get_nccl_hints_unless_the_user_sets_them_or_turns_them_off() {
    let _serial = serial();
    let show = "echo nccl ${NCCL_SOCKET_IFNAME:-unset} ${NCCL_IB_HCA:-unset}";
    // This machine has no RDMA NIC and no GPU: only the interface of the ranks' loopback
    // address is known.
    let out = cohort_command()
        .args(["run", "-n", "2", "--no-track", "--", "sh", "-c", show])
        .env_remove("NCCL_SOCKET_IFNAME")
        .env_remove("NCCL_IB_HCA")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("[0] nccl =lo unset"), "{stdout}");
    assert!(stdout.contains("[1] nccl =lo unset"), "{stdout}");
    let out = cohort_command()
        .args(["run", "-n", "1", "--no-track", "--", "sh", "-c", show])
        .env("NCCL_SOCKET_IFNAME", "eth7")
        .output()
        .unwrap();
    assert!(text(&out.stdout).contains("[0] nccl eth7 unset"), "{out:?}");
    let out = cohort_command()
        .args([
            "run",
            "-n",
            "1",
            "--no-track",
            "--no-nccl-hints",
            "--",
            "sh",
            "-c",
            show,
        ])
        .env_remove("NCCL_SOCKET_IFNAME")
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("[0] nccl unset unset"),
        "{out:?}"
    );
}

#[test]
fn a_failing_rank_stops_the_others_and_is_named() {
    let _serial = serial();
    let started = Instant::now();
    let out = cohort(&[
        "run",
        "-n",
        "3",
        "--",
        "sh",
        "-c",
        "if [ $COHORT_RANK = 1 ]; then sleep 0.3; exit 7; fi; sleep 60",
    ]);
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(7));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("rank 1 failed (exit status 7)"), "{stderr}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[test]
fn sigterm_is_forwarded_to_the_ranks() {
    let _serial = serial();
    let mut child = cohort_command()
        .args(["run", "-n", "2", "--", "sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_missing_program_is_a_clear_error() {
    let _serial = serial();
    let out = cohort(&["run", "-n", "2", "--", "/nonexistent/program"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot start /nonexistent/program"));
}

#[test]
fn every_type_and_operation_is_correct_in_real_processes() {
    let _serial = serial();
    for ranks in ["1", "2", "3", "5", "8"] {
        let mut args = vec!["run", "-n", ranks, "--", COHORT, "bench", "allreduce"];
        args.extend_from_slice(&["-b", "4", "-e", "1M", "-f", "16", "-n", "1", "-w", "0"]);
        let out = cohort(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.contains(&format!("{ranks} ranks")), "{stdout}");
        // The peak memory line: what the ranks held above the program's own stays within the
        // collectives' bound, the largest message (256 KiB here) plus 64 MiB.
        let peak: f64 = stdout
            .lines()
            .find_map(|line| {
                line.split_once("# Peak memory per rank: ")
                    .map(|(_, rest)| rest)
            })
            .and_then(|rest| rest.split(' ').next())
            .and_then(|mib| mib.parse().ok())
            .unwrap_or_else(|| panic!("no peak memory line: {stdout}"));
        assert!((0.0..=0.25 + 64.0).contains(&peak), "{stdout}");
        assert!(stdout.contains("(largest message 0.2 MiB;"), "{stdout}");
        // One line per rank says how it reaches the others: shared memory on one machine.
        let n: u32 = ranks.parse().unwrap();
        if n > 1 {
            let last = n - 1;
            assert!(
                stdout.contains("#  Rank   0 reaches shm to 1\n")
                    || stdout.contains(&format!("#  Rank   0 reaches shm to 1-{last}\n")),
                "{stdout}"
            );
            assert!(
                stdout.contains(&format!("#  Rank {last:>3} reaches shm to 0")),
                "{stdout}"
            );
        }
    }
    for transport in [None, Some("--tcp")] {
        for op in ["allreduce", "broadcast", "allgather", "reduce_scatter"] {
            for dtype in [
                "float", "double", "half", "bfloat16", "int32", "int64", "uint8",
            ] {
                let mut args = vec!["run", "-n", "3"];
                args.extend(transport);
                args.extend_from_slice(&["--", COHORT, "bench", op, "-d", dtype]);
                args.extend_from_slice(&[
                    "-o", "max", "-b", "3", "-e", "3M", "-f", "64", "-n", "1", "-w", "0",
                ]);
                let out = cohort(&args);
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{op} {dtype} {transport:?}: {}",
                    text(&out.stderr)
                );
                let stdout = text(&out.stdout);
                let expected = if transport.is_some() {
                    "shm:0 tcp:2"
                } else {
                    "shm:2 tcp:0"
                };
                assert!(stdout.contains(expected), "{stdout}");
            }
        }
    }
}

/// Starts `n` ranks of a long allreduce loop directly (without `cohort run`, which would stop
/// the others itself), so the collectives' own detection is what is measured.
fn start_ranks(n: u32, env: &[(&str, &str)]) -> Vec<Child> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = format!("127.0.0.1:{port}");
    (0..n)
        .map(|rank| {
            cohort_command()
                .args([
                    "bench",
                    "allreduce",
                    "-b",
                    "256K",
                    "-e",
                    "256K",
                    "-n",
                    "1000000",
                    "-w",
                    "0",
                    "-c",
                    "0",
                ])
                .env("COHORT_RANK", rank.to_string())
                .env("COHORT_WORLD_SIZE", n.to_string())
                .env("COHORT_LOCAL_RANK", rank.to_string())
                .env("COHORT_LOCAL_WORLD_SIZE", n.to_string())
                .env("COHORT_STORE", &store)
                .env("COHORT_SECRET", "0123456789abcdef0123")
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

fn signal(child: &Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        signal,
    )
    .unwrap();
}

/// Waits for a rank to exit, at most `bound`; returns its stderr.
fn ended_within(child: Child, bound: Duration, started: Instant) -> String {
    let pid = child.id();
    let mut child = child;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "rank {pid} should fail");
            let out = child.wait_with_output().unwrap();
            return text(&out.stderr);
        }
        assert!(
            started.elapsed() < bound,
            "a rank still runs {:?} after the fault",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn killed_rank_is_named_within_five_seconds(env: &[(&str, &str)]) {
    let mut ranks = start_ranks(3, env);
    std::thread::sleep(Duration::from_millis(1500));
    let victim = ranks.remove(2);
    signal(&victim, nix::sys::signal::Signal::SIGKILL);
    let started = Instant::now();
    for rank in ranks {
        let stderr = ended_within(rank, Duration::from_secs(5), started);
        assert!(stderr.contains("rank 2 on "), "{stderr}");
        assert!(stderr.contains("is gone"), "{stderr}");
    }
    let mut victim = victim;
    let _ = victim.wait();
}

#[test]
fn a_killed_rank_is_detected_over_shared_memory() {
    let _serial = serial();
    killed_rank_is_named_within_five_seconds(&[]);
}

#[test]
fn a_killed_rank_is_detected_over_tcp() {
    let _serial = serial();
    killed_rank_is_named_within_five_seconds(&[("COHORT_TRANSPORT", "tcp")]);
}

#[test]
fn a_killed_rank_is_detected_over_the_slot_protocol() {
    let _serial = serial();
    killed_rank_is_named_within_five_seconds(&[("COHORT_TRANSPORT", "tcp-slots")]);
}

#[test]
fn a_stopped_rank_is_named_at_the_deadline() {
    let _serial = serial();
    let mut ranks = start_ranks(3, &[("COHORT_TIMEOUT", "3")]);
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = ranks.remove(2);
    signal(&stopped, nix::sys::signal::Signal::SIGSTOP);
    let started = Instant::now();
    for rank in ranks {
        // The deadline (3 s) plus the diagnosis (at most 2 s) plus slack.
        let stderr = ended_within(rank, Duration::from_secs(9), started);
        assert!(stderr.contains("timed out"), "{stderr}");
        assert!(stderr.contains("rank 2 on "), "{stderr}");
    }
    signal(&stopped, nix::sys::signal::Signal::SIGKILL);
    let mut stopped = stopped;
    let _ = stopped.wait();
}

#[test]
fn a_bad_environment_names_the_variable() {
    let _serial = serial();
    let out = cohort_command()
        .args(["bench", "allreduce"])
        .env("COHORT_RANK", "zero")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("COHORT_RANK"), "{stderr}");
    assert!(
        stderr.contains("\"zero\" is not a non-negative integer"),
        "{stderr}"
    );
    let out = cohort_command()
        .args(["bench", "allreduce"])
        .env("COHORT_RANK", "0")
        .env("COHORT_WORLD_SIZE", "2")
        .env("COHORT_LOCAL_RANK", "0")
        .env("COHORT_LOCAL_WORLD_SIZE", "2")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(stderr.contains("COHORT_STORE: not set"), "{stderr}");
}
