//! `cohort ui` on its own, as a real process on a real catalog: its JSON is the CLI's JSON for
//! the same catalog, every request needs the token, a loopback server answers only requests for
//! localhost, nothing outside the catalog can be read (`..`, encoded separators, a symbolic
//! link), nothing can be written, and a damaged trial shows as damaged while the rest works.

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const COHORT: &str = env!("CARGO_BIN_EXE_cohort");
const TOKEN: &str = "test-token-0123456789abcdef";

/// A running `cohort ui`, stopped when dropped.
struct Ui {
    child: Child,
    port: u16,
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cohort ui` on `bind` (port 0) and reads the port from the URL it prints.
fn start(catalog: &Path, bind: &str) -> Ui {
    let mut child = Command::new(COHORT)
        .args(["ui", "--bind", bind, "--token", TOKEN, "--catalog"])
        .arg(catalog)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cohort ui starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|host| host.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no URL in {line:?}"));
    assert!(line.contains(&format!("?token={TOKEN}")), "{line}");
    Ui { child, port }
}

/// One HTTP/1.1 request; returns the status, the headers (lower-case names) and the body.
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        text.push_str(&format!("Host: localhost:{port}\r\n"));
    }
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn get(port: u16, path: &str) -> (u16, String) {
    let (status, _, body) = request(
        port,
        "GET",
        path,
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    (status, body)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn cohort_json(catalog: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(COHORT)
        .args(args)
        .arg("--catalog")
        .arg(catalog)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    json(&String::from_utf8_lossy(&out.stdout))
}

/// A catalog of 30 synthetic trials (5 metrics, 100 steps each), one of them damaged.
fn catalog() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(COHORT)
        .args([
            "bench",
            "catalog",
            "generate",
            "--trials",
            "30",
            "--metrics",
            "5",
            "--steps",
            "100",
            "--catalog",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    dir
}

fn trial_dir(catalog: &Path, id: u64) -> std::path::PathBuf {
    cohort_catalog::Catalog::open(catalog)
        .unwrap()
        .experiment("synth")
        .unwrap()
        .trial_dir(id)
}

#[test]
fn the_json_is_the_clis_json_for_the_same_catalog() {
    let dir = catalog();
    let ui = start(dir.path(), "127.0.0.1:0");
    let (status, body) = get(
        ui.port,
        "/api/experiments/synth/trials?where=lr%3C0.01&sort=val_loss:min&limit=7",
    );
    assert_eq!(status, 200, "{body}");
    let cli = cohort_json(
        dir.path(),
        &[
            "trials",
            "synth",
            "--where",
            "lr<0.01",
            "--sort",
            "val_loss:min",
            "--limit",
            "7",
        ],
    );
    assert_eq!(json(&body), cli);
    let (status, body) = get(ui.port, "/api/experiments/synth/trials/3");
    assert_eq!(status, 200, "{body}");
    let mut page = json(&body);
    let object = page.as_object_mut().unwrap();
    assert!(object.remove("output").is_some() && object.remove("warnings").is_some());
    assert_eq!(page, cohort_json(dir.path(), &["trial", "show", "synth/3"]));
    let (_, body) = get(ui.port, "/api/experiments");
    let listed = json(&body);
    let cli = cohort_json(dir.path(), &["exp", "list"]);
    let page = &listed["experiments"][0];
    for key in ["name", "owner", "created", "trials", "description"] {
        assert_eq!(page[key], cli[0][key], "{key}");
    }
    assert_eq!(page["states"]["completed"], 30);
    // The table: one row per trial, in the query's order, the same trials as the CLI's.
    let (_, body) = get(ui.port, "/api/experiments/synth/table?sort=val_loss:min");
    let table = json(&body);
    let cli = cohort_json(dir.path(), &["trials", "synth", "--sort", "val_loss:min"]);
    let ids: Vec<&serde_json::Value> = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r[0])
        .collect();
    let cli_ids: Vec<&serde_json::Value> = cli
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["trial"])
        .collect();
    assert_eq!(ids, cli_ids);
    // A curve, downsampled with its ends kept.
    let (_, body) = get(
        ui.port,
        "/api/experiments/synth/series?metric=val_loss&trials=2,1&points=10",
    );
    let series = json(&body);
    assert_eq!(series["series"][0]["trial"], 2);
    assert_eq!(series["series"][0]["points"], 100);
    let steps = series["series"][0]["step"].as_array().unwrap();
    assert!(
        steps.len() <= 10 && steps.first() == Some(&0.into()) && steps.last() == Some(&99.into()),
        "{steps:?}"
    );
    // A bad query says what is wrong, as the CLI does.
    let (status, body) = get(ui.port, "/api/experiments/synth/trials?where=nosuch%3C1");
    assert_eq!(status, 400, "{body}");
    assert!(
        json(&body)["error"].as_str().unwrap().contains("nosuch"),
        "{body}"
    );
    let (status, _) = get(ui.port, "/api/experiments/nothing/trials");
    assert_eq!(status, 404);
}

#[test]
fn every_request_needs_the_token_and_a_loopback_server_answers_localhost_only() {
    let dir = catalog();
    let ui = start(dir.path(), "127.0.0.1:0");
    for path in [
        "/",
        "/assets/app.js",
        "/api/experiments",
        "/api/experiments/synth/trials",
    ] {
        let (status, _, body) = request(ui.port, "GET", path, &[]);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(!body.contains("synth\""), "{path} leaked: {body}");
        let (status, _, _) = request(
            ui.port,
            "GET",
            path,
            &[("Authorization", "Bearer wrong-token-0123456789abcdef")],
        );
        assert_eq!(status, 401, "{path} with a wrong token");
        let (status, _, _) = request(
            ui.port,
            "GET",
            path,
            &[("Cookie", &format!("cohort_ui_{}=wrong", ui.port))],
        );
        assert_eq!(status, 401, "{path} with a wrong cookie");
    }
    // The URL's token opens the page and sets the cookie; the cookie then suffices.
    let (status, headers, body) = request(ui.port, "GET", &format!("/?token={TOKEN}"), &[]);
    assert_eq!(status, 200, "{body}");
    let cookie = headers
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.clone())
        .expect("a cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let (status, _, _) = request(ui.port, "GET", "/api/experiments", &[("Cookie", &pair)]);
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-security-policy" && v.contains("default-src 'self'")));
    assert!(headers
        .iter()
        .any(|(k, v)| k == "referrer-policy" && v == "no-referrer"));
    // Another site's page, through DNS rebinding, names another host: refused even with the token.
    let (status, _, _) = request(
        ui.port,
        "GET",
        "/api/experiments",
        &[
            ("Host", "attacker.example"),
            ("Authorization", &format!("Bearer {TOKEN}")),
        ],
    );
    assert_eq!(status, 403);
    // Read-only: nothing but GET.
    for method in ["POST", "PUT", "DELETE"] {
        let (status, _, _) = request(
            ui.port,
            method,
            "/api/experiments",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
        );
        assert_eq!(status, 405, "{method}");
    }
}

#[test]
fn bound_off_loopback_it_still_refuses_requests_without_the_token() {
    let dir = catalog();
    let ui = start(dir.path(), "0.0.0.0:0");
    let (status, _, _) = request(
        ui.port,
        "GET",
        "/api/experiments",
        &[("Host", "login1.cluster:7180")],
    );
    assert_eq!(status, 401);
    let (status, _, body) = request(
        ui.port,
        "GET",
        "/api/experiments",
        &[
            ("Host", "login1.cluster:7180"),
            ("Authorization", &format!("Bearer {TOKEN}")),
        ],
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn nothing_outside_the_catalog_can_be_read() {
    let dir = catalog();
    let ui = start(dir.path(), "127.0.0.1:0");
    // A trial's output that is a symbolic link to a file outside the catalog.
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "the viewer's secret").unwrap();
    std::os::unix::fs::symlink(secret.path(), trial_dir(dir.path(), 4).join("output.log")).unwrap();
    let (status, body) = get(ui.port, "/api/experiments/synth/trials/4/output");
    assert_ne!(status, 200);
    assert!(!body.contains("secret"), "{body}");
    // A real output file is served.
    std::fs::write(
        trial_dir(dir.path(), 5).join("output.log"),
        "epoch 1\nepoch 2\n",
    )
    .unwrap();
    let (status, body) = get(ui.port, "/api/experiments/synth/trials/5/output?bytes=8");
    assert_eq!((status, body.as_str()), (200, "epoch 2\n"));
    for path in [
        "/../../../etc/passwd",
        "/assets/..%2F..%2F..%2Fetc%2Fpasswd",
        "/assets/%2e%2e/%2e%2e/etc/passwd",
        "/api/experiments/..%2F..%2Fetc/trials",
        "/api/experiments/synth/trials/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/experiments/synth/trials/1%2F..%2F..%2F2/output",
    ] {
        let (status, body) = get(ui.port, path);
        assert!(status == 404 || status == 400, "{path}: {status} {body}");
        assert!(!body.contains("root:"), "{path}: {body}");
    }
}

#[test]
fn a_damaged_trial_shows_as_damaged_and_the_pages_still_answer() {
    let dir = catalog();
    // Trial 6's metric log is cut in the middle of a record.
    let trial = trial_dir(dir.path(), 6);
    let segment = std::fs::read_dir(&trial)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "clog"))
        .unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    std::fs::write(&segment, &bytes[..bytes.len() / 2 + 3]).unwrap();
    std::fs::write(trial_dir(dir.path(), 7).join("state.json"), b"{ not json").unwrap();
    let ui = start(dir.path(), "127.0.0.1:0");
    let (status, body) = get(ui.port, "/api/experiments/synth/table");
    assert_eq!(status, 200, "{body}");
    let table = json(&body);
    assert_eq!(
        table["damaged"],
        serde_json::json!([6]),
        "the trial with a torn log"
    );
    assert_eq!(
        table["rows"].as_array().unwrap().len(),
        30,
        "every trial still listed"
    );
    // The experiment page names both damaged files; the rest of it answers.
    let (status, body) = get(ui.port, "/api/experiments/synth");
    assert_eq!(status, 200, "{body}");
    let warnings = json(&body)["warnings"].to_string();
    assert!(
        warnings.contains("000006")
            && warnings.contains("cut short")
            && warnings.contains("000007/state.json"),
        "{warnings}"
    );
    for path in [
        "/api/experiments",
        "/api/experiments/synth/trials/6",
        "/api/experiments/synth/trials/7",
        "/api/experiments/synth/series?metric=val_loss&trials=6,7",
    ] {
        let (status, body) = get(ui.port, path);
        assert_eq!(status, 200, "{path}: {body}");
    }
}

#[test]
fn an_unchanged_answer_is_not_sent_again() {
    let dir = catalog();
    let ui = start(dir.path(), "127.0.0.1:0");
    let auth = format!("Bearer {TOKEN}");
    let (status, headers, _) = request(
        ui.port,
        "GET",
        "/api/experiments/synth/table",
        &[("Authorization", &auth)],
    );
    assert_eq!(status, 200);
    let tag = headers
        .iter()
        .find(|(k, _)| k == "etag")
        .map(|(_, v)| v.clone())
        .expect("an ETag");
    let (status, _, body) = request(
        ui.port,
        "GET",
        "/api/experiments/synth/table",
        &[("Authorization", &auth), ("If-None-Match", &tag)],
    );
    assert_eq!((status, body.as_str()), (304, ""));
}

#[test]
fn the_models_are_the_clis_models() {
    let dir = catalog();
    let ui = start(dir.path(), "127.0.0.1:0");
    let (status, body) = get(ui.port, "/api/models");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["models"], serde_json::json!([]));
    // A checkpoint for trial 3, registered and aliased.
    let weights = dir.path().join("w.pt");
    std::fs::write(&weights, b"weights").unwrap();
    let cohort = |args: &[&str]| {
        let out = Command::new(COHORT)
            .args(args)
            .arg("--catalog")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    cohort(&[
        "log",
        "checkpoint",
        weights.to_str().unwrap(),
        "--step",
        "99",
        "--experiment",
        "synth",
        "--trial",
        "3",
    ]);
    cohort(&["model", "register", "synth-best", "--from", "synth/3"]);
    cohort(&["model", "alias", "synth-best@1", "production"]);
    let (_, body) = get(ui.port, "/api/models");
    assert_eq!(
        json(&body)["models"],
        cohort_json(dir.path(), &["model", "list"])
    );
    let (status, body) = get(ui.port, "/api/models/synth-best");
    assert_eq!(status, 200, "{body}");
    let mut page = json(&body);
    assert_eq!(
        page.as_object_mut().unwrap().remove("warnings"),
        Some(serde_json::json!([]))
    );
    assert_eq!(
        page,
        cohort_json(dir.path(), &["model", "show", "synth-best"])
    );
    assert_eq!(page["versions"][0]["metrics"]["val_loss"]["step"], 99);
    let (status, body) = get(ui.port, "/api/models/nothing");
    assert_eq!(status, 404, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("no model named"),
        "{body}"
    );
}
