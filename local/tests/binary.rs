//! The `iam-local` binary itself: the bootstrap line, persistence across restarts, and the
//! README's curl walkthrough run verbatim.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

struct Server {
    child: Child,
    addr: String,
    bootstrap: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `iam-local` on a free port and waits for its "listening" line.
fn start(args: &[&str]) -> Server {
    start_with(args, &[])
}

fn start_with(args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iam-local"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .env("IAM_ARGON2_MEMORY_KIB", "4096")
        .env("IAM_ARGON2_ITERATIONS", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start iam-local");
    let stdout = child.stdout.take().unwrap();
    // From here on, Drop kills and reaps the child whatever happens.
    let mut server = Server { child, addr: String::new(), bootstrap: Vec::new() };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("iam-local printed its address");
        if let Some(rest) = line.strip_prefix("iam-local listening on http://") {
            server.addr = rest.split_whitespace().next().unwrap().to_owned();
            return server;
        }
        server.bootstrap.push(line);
    }
}

fn bootstrap_key(line: &str, org: &str) -> String {
    line.strip_prefix(&format!("Bootstrap API key for {org}: ")).expect("bootstrap line format").to_owned()
}

/// A minimal HTTP/1.1 client: one request per connection.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A management token, for the pinned issuer `http://iam.test/iam`.
fn exchange(addr: &str, key: &str) -> (u16, Value) {
    let body = format!("{{\"apiKey\":\"{key}\",\"audience\":\"http://iam.test/iam/management\"}}");
    http(addr, "POST", "/iam/auth/token", &[("Content-Type", "application/json")], &body)
}

#[test]
fn restart_on_the_same_data_dir_keeps_keys_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    // The default issuer names the port, which changes between these two starts; pin it.
    let issuer = [("IAM_ISSUER", "http://iam.test/iam")];
    let first = start_with(&["--data-dir", data_arg, "--org", "acme", "--org", "globex"], &issuer);
    assert_eq!(first.bootstrap.len(), 2, "{:?}", first.bootstrap);
    let acme = bootstrap_key(&first.bootstrap[0], "acme");
    assert!(acme.starts_with("ik_"));
    let (status, token) = exchange(&first.addr, &acme);
    assert_eq!(status, 200, "{token}");
    let token = token["access_token"].as_str().unwrap().to_owned();
    drop(first);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("signing-key.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the signing key is readable by its owner only");
    }

    let second = start_with(&["--data-dir", data_arg, "--org", "acme", "--org", "initech"], &issuer);
    assert_eq!(second.bootstrap.len(), 1, "only the new organisation is bootstrapped: {:?}", second.bootstrap);
    assert!(second.bootstrap[0].starts_with("Bootstrap API key for initech: ik_"));
    let (status, _) = exchange(&second.addr, &acme);
    assert_eq!(status, 200, "the old key still exchanges");
    let auth = format!("Bearer {token}");
    let (status, list) = http(&second.addr, "GET", "/iam/api-keys", &[("Authorization", &auth)], "");
    assert_eq!(status, 200, "a token from before the restart still verifies: {list}");
}

#[test]
fn in_memory_mode_forgets_everything() {
    let server = start(&["--in-memory"]);
    assert_eq!(server.bootstrap.len(), 1);
    assert!(server.bootstrap[0].starts_with("Bootstrap API key for dev: ik_"));
    let (status, body) = http(&server.addr, "GET", "/iam/.well-known/openid-configuration", &[], "");
    assert_eq!(status, 200);
    assert_eq!(body["issuer"], format!("http://{}/iam", server.addr));
}

#[test]
fn a_locked_out_embedded_organisation_is_recovered_with_recover_admin() {
    let dir = tempfile::tempdir().unwrap();
    let data_arg = dir.path().join("data");
    let data_arg = data_arg.to_str().unwrap();
    let issuer = [("IAM_ISSUER", "http://iam.test/iam")];
    let first = start_with(&["--data-dir", data_arg, "--org", "acme"], &issuer);
    let lost = bootstrap_key(&first.bootstrap[0], "acme");
    drop(first);

    let out = Command::new(env!("CARGO_BIN_EXE_iam-local"))
        .args(["--data-dir", data_arg, "--recover-admin", "acme"])
        .env("IAM_ARGON2_MEMORY_KIB", "4096")
        .env("IAM_ARGON2_ITERATIONS", "1")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let recovered = stdout.trim().strip_prefix("Recovery API key for acme: ").expect("the key line").to_owned();
    assert!(recovered.starts_with("ik_") && recovered != lost);

    let second = start_with(&["--data-dir", data_arg, "--org", "acme"], &issuer);
    assert!(second.bootstrap.is_empty(), "the organisation was already bootstrapped");
    let (status, token) = exchange(&second.addr, &recovered);
    assert_eq!(status, 200, "{token}");
    let auth = format!("Bearer {}", token["access_token"].as_str().unwrap());
    let (status, list) = http(&second.addr, "GET", "/iam/api-keys", &[("Authorization", &auth)], "");
    assert_eq!(status, 200, "the recovered administrator manages the organisation: {list}");
}

#[test]
fn bad_flags_exit_with_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_iam-local")).args(["--org", "Not Valid"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: iam-local"));
}

/// The shell block between `<!-- {name}:begin -->` and `<!-- {name}:end -->` in README.md.
fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let start = readme.find(&format!("<!-- {name}:begin -->")).expect("walkthrough start marker");
    let end = readme.find(&format!("<!-- {name}:end -->")).expect("walkthrough end marker");
    let block = &readme[start..end];
    let body_start = block.find("```sh\n").expect("sh fence") + "```sh\n".len();
    let body_end = block.rfind("```").unwrap();
    block[body_start..body_end].to_owned()
}

/// Runs the README block `name` verbatim against `server` as its bootstrap admin; answers
/// what it printed, or fails with everything it printed.
fn run_readme_block(server: &Server, name: &str) -> String {
    let key = bootstrap_key(&server.bootstrap[0], "dev");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{}", readme_block(name)))
        .env("IAM", format!("http://{}", server.addr))
        .env("ADMIN_KEY", key)
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    stdout
}

fn run_walkthrough(server: &Server) {
    let stdout = run_readme_block(server, "walkthrough");
    assert!(stdout.contains("principal: akp_"), "{stdout}");
    assert!(stdout.contains("\"roleId\":\"iam-viewer\""), "{stdout}");
    assert!(stdout.contains("\"displayName\":\"billing-job\""), "step 6 answered: {stdout}");
    assert!(stdout.contains("\"status\":\"Revoked\""), "{stdout}");
    assert!(stdout.contains("\"error\":\"invalid_grant\",\"error_description\":\"the credential has been revoked\""), "{stdout}");
    assert!(stdout.contains("management call with the old token: HTTP 401"), "{stdout}");
}

#[test]
fn the_readme_rotation_walkthrough_works_verbatim() {
    let stdout = run_readme_block(&start(&["--in-memory"]), "rotation-walkthrough");
    let until = stdout.lines().find_map(|l| l.strip_prefix("old key works until: ")).expect("step 1 printed the expiry");
    let until: chrono::DateTime<chrono::Utc> = until.parse().expect("a time");
    let left = until - chrono::Utc::now();
    assert!(left > chrono::Duration::minutes(55) && left <= chrono::Duration::minutes(60), "an hour's grace: {until}");
    assert!(stdout.contains("successor: "), "{stdout}");
    for line in ["old key: HTTP 200", "new key: HTTP 200", "old key after revoke: HTTP 400", "new key after revoke: HTTP 200"] {
        assert!(stdout.contains(line), "expected '{line}' in:\n{stdout}");
    }
}

#[test]
fn the_readme_policy_walkthrough_works_verbatim() {
    let stdout = run_readme_block(&start(&["--in-memory"]), "policy-walkthrough");
    let expires = stdout.lines().find_map(|l| l.strip_prefix("expires: ")).expect("step 2 printed the expiry");
    let expires: chrono::DateTime<chrono::Utc> = expires.parse().expect("a time");
    let lifetime = expires - chrono::Utc::now();
    assert!(lifetime > chrono::Duration::days(89) && lifetime <= chrono::Duration::days(90), "the maximum: {expires}");
    for line in ["exchanges in 30 days: 2", "last used from: 127.0.0.1", "None"] {
        assert!(stdout.lines().any(|l| l == line), "expected '{line}' in:\n{stdout}");
    }
}

#[test]
fn the_readme_audit_walkthrough_works_verbatim() {
    let stdout = run_readme_block(&start(&["--in-memory"]), "audit-walkthrough");
    let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.split(' ').collect()).collect();
    let actions: Vec<&str> = lines.iter().map(|l| l[1]).collect();
    assert_eq!(actions, ["principal.create", "credential.issue", "credential.revoke"], "{stdout}");
    assert!(lines.iter().all(|l| l[2] == "True"), "each by the administrator: {stdout}");
    let seqs: Vec<u64> = lines.iter().map(|l| l[0].parse().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "consecutive in the chain: {stdout}");
    assert_eq!(lines[1][3], lines[2][3], "the same key issued and revoked: {stdout}");
}

#[test]
fn the_readme_walkthrough_works_verbatim() {
    run_walkthrough(&start(&["--in-memory"]));
}

#[test]
fn the_readme_walkthrough_works_on_dynamodb_and_secrets_manager() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (tables, secret) = runtime.block_on(async {
        let (_, tables) = iam_testkit::fresh_store_with_tables().await;
        let doc = iam_shared::token::SigningKeyDocument::generate().unwrap();
        (tables, iam_testkit::create_signing_secret(&doc).await)
    });
    let endpoint = iam_testkit::moto().endpoint.clone();
    let env = [
        ("IAM_STORE", "dynamodb"),
        ("IAM_PRINCIPALS_TABLE", tables.principals.as_str()),
        ("IAM_CREDENTIALS_TABLE", tables.credentials.as_str()),
        ("IAM_AUDIT_TABLE", tables.audit.as_str()),
        ("IAM_SIGNING_SECRET_ID", secret.private.as_str()),
        ("IAM_SIGNING_PUBLIC_KEYS_SECRET_ID", secret.public.as_str()),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", iam_testkit::REGION),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    let server = start_with(&[], &env);
    assert_eq!(server.bootstrap.len(), 1, "{:?}", server.bootstrap);
    run_walkthrough(&server);
    drop(server);
    let again = start_with(&[], &env);
    assert!(again.bootstrap.is_empty(), "the organisation stays bootstrapped in DynamoDB");
}

/// iam-local runs the delivery function's code in-process: a change made through the API
/// reaches the organisation's webhook, signed (checked by the `standardwebhooks` package), and
/// its event is appended to `events.jsonl` in the data directory.
#[test]
fn changes_reach_webhooks_and_the_events_file_in_process() {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/webhook_sink.py");
    let mut sink = Command::new(python).arg(script).stdout(Stdio::piped()).spawn().expect("the webhook sink");
    let mut port = String::new();
    BufReader::new(sink.stdout.take().unwrap()).read_line(&mut port).unwrap();
    let sink_addr = format!("127.0.0.1:{}", port.trim());
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _sink = Kill(sink);

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("IAM_ISSUER", "http://iam.test/iam"), ("IAM_OUTBOUND_ALLOW_LOOPBACK", "true")];
    let server = start_with(&["--data-dir", data.to_str().unwrap(), "--org", "acme"], &env);
    let (_, token) = exchange(&server.addr, &bootstrap_key(&server.bootstrap[0], "acme"));
    let auth = format!("Bearer {}", token["access_token"].as_str().unwrap());
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let body = format!("{{\"url\":\"http://{sink_addr}/hook\"}}");
    let (status, created) = http(&server.addr, "POST", "/iam/webhooks", &headers, &body);
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    let (status, principal) = http(&server.addr, "POST", "/iam/api-keys", &headers, r#"{"displayName":"relayed"}"#);
    assert_eq!(status, 201, "{principal}");

    let mut received = Value::Null;
    for _ in 0..100 {
        received = http(&sink_addr, "GET", "/_received", &[], "").1;
        if received.as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = &received[0];
    let sent: Value = serde_json::from_str(first["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["type"], "principal.created", "{received}");
    assert_eq!(sent["data"]["principalId"], principal["id"]);
    let (_, verdicts) = http(&sink_addr, "POST", "/_verify", &[], &format!("{{\"secret\":\"{secret}\"}}"));
    assert_eq!(verdicts[0]["verified"], true, "{verdicts}");

    let events = std::fs::read_to_string(data.join("events.jsonl")).expect("the events file");
    let event: Value = serde_json::from_str(events.lines().next().unwrap()).unwrap();
    assert_eq!(event["detail-type"], "Principal Created");
    assert_eq!(event["detail"]["eventId"], first["headers"]["webhook-id"]);
    assert!(!events.contains(secret.trim_start_matches("whsec_")));
}
