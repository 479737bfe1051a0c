//! A proxy between the AWS SDK and moto that can throttle, fail or stall chosen operations,
//! and emulate DynamoDB's transaction conflicts, which moto (serving one request at a time) never
//! produces. Every request gets its own connection (`Connection: close`), so a fault decision
//! is per request and a pooled connection never carries one over.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::capacity::{self, Capacity};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer `ThrottlingException` (retryable).
    Throttle,
    /// Answer 500 `InternalServerError`.
    Fail,
    /// Never answer.
    Stall,
    /// Answer normally: with a count, lets that many calls through before the rules after it
    /// apply (stall the second GetItem, say).
    Pass,
}

#[derive(Default)]
struct Rules {
    /// (operation name or "*", fault, how many more times; `None` = always)
    rules: Vec<(String, Fault, Option<usize>)>,
    /// An outage: after this many more requests pass, every request fails.
    outage_after: Option<usize>,
    seen: Vec<String>,
    calls: Vec<IamCall>,
    /// When the first fault since the last `clear` was injected.
    first_fault_at: Option<std::time::Instant>,
    /// Conflict emulation: how long each transaction stays pending before it reaches moto.
    conflict_hold: Option<Duration>,
    /// Items of transactions pending now, and of plain writes on their way to moto.
    in_transactions: HashSet<ItemKey>,
    in_plain_writes: HashSet<ItemKey>,
    /// Which conflict rules refused a request, in order.
    conflicts: Vec<ConflictRule>,
    /// Whether to measure each DynamoDB request's capacity (see [`crate::capacity`]).
    count_capacity: bool,
    capacity: Vec<(String, Capacity)>,
}

/// A DynamoDB item: its table and its key attributes, canonical.
type ItemKey = (String, String);

/// The documented conflict rules (DynamoDB developer guide, "Transaction conflict handling"),
/// as the emulation applies them. Reads that are not transactional never conflict: they read
/// the last committed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictRule {
    /// A TransactWriteItems touching an item of a pending transaction, or of a plain write in
    /// flight, is cancelled (`TransactionCanceledException`, reason `TransactionConflict`).
    TransactionMeetsPending,
    /// A PutItem, UpdateItem or DeleteItem of an item in a pending transaction is refused with
    /// `TransactionConflictException`.
    WriteMeetsTransaction,
    /// A TransactGetItems reading an item of a pending transaction is cancelled.
    TransactionalReadMeetsTransaction,
}

/// What one request asks of AWS in IAM's terms: the action a policy must allow, and the
/// resource (table name or secret id) it acts on. A TransactWriteItems is one call per item,
/// as IAM authorizes each item's own action.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IamCall {
    pub action: String,
    pub resource: String,
}

pub struct FaultProxy {
    pub endpoint: String,
    rules: Arc<Mutex<Rules>>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream.trim_start_matches("http://").parse().expect("upstream host:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let rules = Arc::new(Mutex::new(Rules::default()));
        let shared = rules.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(handle(client, upstream, shared.clone()));
            }
        });
        Self { endpoint, rules }
    }

    /// Injects `fault` into the next `times` calls of `operation` (e.g. "GetItem",
    /// "TransactWriteItems", or "*"); `None` for every call from now on.
    pub fn inject(&self, operation: &str, fault: Fault, times: Option<usize>) {
        self.rules.lock().unwrap().rules.push((operation.to_owned(), fault, times));
    }

    /// Lets `passing` more requests through, then fails every request (500) until `clear`:
    /// the store going down at one chosen step of an operation.
    pub fn outage_after(&self, passing: usize) {
        self.rules.lock().unwrap().outage_after = Some(passing);
    }

    pub fn clear(&self) {
        let mut rules = self.rules.lock().unwrap();
        rules.rules.clear();
        rules.outage_after = None;
        rules.first_fault_at = None;
    }

    /// From now on, every TransactWriteItems stays pending for `hold` before it reaches moto,
    /// and requests meeting a pending one are refused as DynamoDB refuses them (see
    /// [`ConflictRule`]).
    pub fn emulate_conflicts(&self, hold: Duration) {
        self.rules.lock().unwrap().conflict_hold = Some(hold);
    }

    /// From now on, measures the read and write units of every DynamoDB request forwarded.
    pub fn count_capacity(&self) {
        self.rules.lock().unwrap().count_capacity = true;
    }

    /// The capacity measured since the last call: (operation, units), in order.
    pub fn take_capacity(&self) -> Vec<(String, Capacity)> {
        std::mem::take(&mut self.rules.lock().unwrap().capacity)
    }

    /// The conflicts emulated so far.
    pub fn conflicts(&self) -> Vec<ConflictRule> {
        self.rules.lock().unwrap().conflicts.clone()
    }

    /// When the first fault since the last [`Self::clear`] was injected: the start of the
    /// operation that failed, so a test can bound how long that operation took to give up.
    pub fn first_fault_at(&self) -> Option<std::time::Instant> {
        self.rules.lock().unwrap().first_fault_at
    }

    /// Forgets the operations seen so far.
    pub fn reset_seen(&self) {
        self.rules.lock().unwrap().seen.clear();
    }

    /// The operations seen so far, in order.
    pub fn seen(&self) -> Vec<String> {
        self.rules.lock().unwrap().seen.clone()
    }

    /// The IAM actions asked for since the last call, and forgets them.
    pub fn take_calls(&self) -> Vec<IamCall> {
        std::mem::take(&mut self.rules.lock().unwrap().calls)
    }
}

/// The IAM actions one AWS JSON-protocol request needs (`X-Amz-Target` and its body).
pub fn iam_calls_of(request: &[u8]) -> Vec<IamCall> {
    let Some(target) = target_of(request) else { return Vec::new() };
    let Some((service, operation)) = target.split_once('.') else { return Vec::new() };
    let body: serde_json::Value =
        find(request, b"\r\n\r\n").and_then(|i| serde_json::from_slice(&request[i + 4..]).ok()).unwrap_or(serde_json::Value::Null);
    let call = |action: String, resource: &serde_json::Value| IamCall { action, resource: resource.as_str().unwrap_or("?").to_owned() };
    if service.starts_with("DynamoDB") {
        let items = body["TransactItems"].as_array().cloned().unwrap_or_default();
        match operation {
            "TransactWriteItems" | "TransactGetItems" => items
                .iter()
                .filter_map(|item| item.as_object()?.iter().next().map(|(kind, spec)| (kind.clone(), spec["TableName"].clone())))
                .map(|(kind, table)| {
                    let action = match kind.as_str() {
                        "ConditionCheck" => "ConditionCheckItem".to_owned(),
                        other => format!("{other}Item"),
                    };
                    call(format!("dynamodb:{action}"), &table)
                })
                .collect(),
            "BatchGetItem" | "BatchWriteItem" => body["RequestItems"]
                .as_object()
                .map(|tables| tables.keys().map(|t| call(format!("dynamodb:{operation}"), &serde_json::Value::from(t.as_str()))).collect())
                .unwrap_or_default(),
            // A query of an index needs a grant on the index's ARN, not the table's.
            _ => match body["IndexName"].as_str() {
                Some(index) => vec![IamCall {
                    action: format!("dynamodb:{operation}"),
                    resource: format!("{}/index/{index}", body["TableName"].as_str().unwrap_or("?")),
                }],
                None => vec![call(format!("dynamodb:{operation}"), &body["TableName"])],
            },
        }
    } else if service == "AWSEvents" {
        // IAM authorizes PutEvents per bus.
        let buses: Vec<String> =
            body["Entries"].as_array().into_iter().flatten().map(|e| e["EventBusName"].as_str().unwrap_or("default").to_owned()).collect();
        buses.into_iter().map(|bus| IamCall { action: format!("events:{operation}"), resource: bus }).collect()
    } else if service == "AmazonSQS" {
        // IAM authorizes per queue: its name is the URL's last segment.
        let queue = body["QueueUrl"].as_str().and_then(|u| u.rsplit('/').next()).unwrap_or("?").to_owned();
        vec![IamCall { action: format!("sqs:{operation}"), resource: queue }]
    } else {
        vec![call(format!("{}:{operation}", service.to_ascii_lowercase()), &body["SecretId"])]
    }
}

fn decide(rules: &Mutex<Rules>, operation: &str) -> Option<Fault> {
    let mut guard = rules.lock().unwrap();
    let fault = decide_locked(&mut guard, operation).filter(|f| *f != Fault::Pass);
    if fault.is_some() {
        guard.first_fault_at.get_or_insert_with(std::time::Instant::now);
    }
    fault
}

fn decide_locked(rules: &mut Rules, operation: &str) -> Option<Fault> {
    rules.seen.push(operation.to_owned());
    match rules.outage_after {
        Some(0) => return Some(Fault::Fail),
        Some(n) => rules.outage_after = Some(n - 1),
        None => {}
    }
    for (op, fault, times) in rules.rules.iter_mut() {
        if op == "*" || op == operation {
            match times {
                Some(0) => continue,
                Some(n) => *n -= 1,
                None => {}
            }
            return Some(fault.clone());
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one HTTP/1.1 request (headers and a Content-Length body).
async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let headers = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let length: usize = headers.lines().find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))).unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf)
}

fn target_of(request: &[u8]) -> Option<String> {
    let head_end = find(request, b"\r\n\r\n").unwrap_or(request.len());
    let head = String::from_utf8_lossy(&request[..head_end]);
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("x-amz-target").then(|| value.trim().to_owned())
    })
}

fn operation_of(request: &[u8]) -> String {
    target_of(request).map(|t| t.rsplit('.').next().unwrap_or_default().to_owned()).unwrap_or_else(|| "unknown".to_owned())
}

/// Forces `Connection: close` on a request or response head.
fn close_after(message: &[u8]) -> Vec<u8> {
    let Some(head_end) = find(message, b"\r\n\r\n") else { return message.to_vec() };
    let head = String::from_utf8_lossy(&message[..head_end]);
    let mut lines: Vec<&str> = head.split("\r\n").filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).collect();
    lines.insert(1, "Connection: close");
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(&message[head_end..]);
    out
}

fn canned(status: &str, kind: &str, message: &str) -> Vec<u8> {
    let body = format!(r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{kind}","message":"{message}"}}"#);
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.0\r\nx-amzn-ErrorType: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The items a DynamoDB request writes or reads, by table and key. A put names its item
/// whole: its key is `pk`/`sk` in the principals table's layout, else `keyId`.
fn item_keys(operation: &str, body: &serde_json::Value) -> Vec<ItemKey> {
    let key_of = |table: &serde_json::Value, spec: &serde_json::Value| -> ItemKey {
        let attributes = spec.get("Key").or_else(|| spec.get("Item")).and_then(|v| v.as_object());
        let names: &[&str] = match attributes {
            Some(a) if a.contains_key("pk") => &["pk", "sk"],
            _ => &["keyId"],
        };
        let key: BTreeMap<&str, String> =
            names.iter().map(|n| (*n, attributes.and_then(|a| a.get(*n)).map(|v| v.to_string()).unwrap_or_default())).collect();
        (table.as_str().unwrap_or("?").to_owned(), format!("{key:?}"))
    };
    match operation {
        "TransactWriteItems" | "TransactGetItems" => body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item.as_object()?.values().next().map(|spec| key_of(&spec["TableName"], spec)))
            .collect(),
        "PutItem" | "UpdateItem" | "DeleteItem" | "GetItem" => vec![key_of(&body["TableName"], body)],
        _ => Vec::new(),
    }
}

fn cancelled_for_conflict(overlapping: &[bool]) -> Vec<u8> {
    let reasons: Vec<serde_json::Value> = overlapping
        .iter()
        .map(|&o| match o {
            true => serde_json::json!({"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}),
            false => serde_json::json!({"Code": "None"}),
        })
        .collect();
    let codes: Vec<&str> = overlapping.iter().map(|&o| if o { "TransactionConflict" } else { "None" }).collect();
    let body = serde_json::json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "message": format!("Transaction cancelled, please refer cancellation reasons for specific reasons [{}]", codes.join(", ")),
        "CancellationReasons": reasons,
    })
    .to_string();
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\nx-amzn-ErrorType: TransactionCanceledException\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What the conflict emulation does with a request: refuse it now, or let it through (holding
/// it first, and releasing its items after, when it is a transaction).
enum Admission {
    Refuse(Vec<u8>),
    Pass { hold: Option<Duration>, transaction: Vec<ItemKey>, plain_write: Vec<ItemKey> },
}

fn admit(rules: &Mutex<Rules>, operation: &str, request: &[u8]) -> Admission {
    let mut r = rules.lock().unwrap();
    let pass = Admission::Pass { hold: None, transaction: Vec::new(), plain_write: Vec::new() };
    let Some(hold) = r.conflict_hold else { return pass };
    let body: serde_json::Value =
        find(request, b"\r\n\r\n").and_then(|i| serde_json::from_slice(&request[i + 4..]).ok()).unwrap_or(serde_json::Value::Null);
    let keys = item_keys(operation, &body);
    match operation {
        "TransactWriteItems" => {
            let overlapping: Vec<bool> = keys.iter().map(|k| r.in_transactions.contains(k) || r.in_plain_writes.contains(k)).collect();
            if overlapping.contains(&true) {
                r.conflicts.push(ConflictRule::TransactionMeetsPending);
                return Admission::Refuse(cancelled_for_conflict(&overlapping));
            }
            r.in_transactions.extend(keys.iter().cloned());
            Admission::Pass { hold: Some(hold), transaction: keys, plain_write: Vec::new() }
        }
        "TransactGetItems" => {
            let overlapping: Vec<bool> = keys.iter().map(|k| r.in_transactions.contains(k)).collect();
            if overlapping.contains(&true) {
                r.conflicts.push(ConflictRule::TransactionalReadMeetsTransaction);
                return Admission::Refuse(cancelled_for_conflict(&overlapping));
            }
            pass
        }
        "PutItem" | "UpdateItem" | "DeleteItem" => {
            if keys.iter().any(|k| r.in_transactions.contains(k)) {
                r.conflicts.push(ConflictRule::WriteMeetsTransaction);
                return Admission::Refuse(canned("400 Bad Request", "TransactionConflictException", "Transaction is ongoing for the item"));
            }
            r.in_plain_writes.extend(keys.iter().cloned());
            Admission::Pass { hold: None, transaction: Vec::new(), plain_write: keys }
        }
        _ => pass,
    }
}

fn release(rules: &Mutex<Rules>, transaction: &[ItemKey], plain_write: &[ItemKey]) {
    let mut r = rules.lock().unwrap();
    for k in transaction {
        r.in_transactions.remove(k);
    }
    for k in plain_write {
        r.in_plain_writes.remove(k);
    }
}

async fn handle(mut client: TcpStream, upstream: SocketAddr, rules: Arc<Mutex<Rules>>) {
    let Some(request) = read_request(&mut client).await else { return };
    let operation = operation_of(&request);
    rules.lock().unwrap().calls.extend(iam_calls_of(&request));
    let (transaction, plain_write) = match admit(&rules, &operation, &request) {
        Admission::Refuse(answer) => {
            let _ = client.write_all(&answer).await;
            let _ = client.shutdown().await;
            return;
        }
        Admission::Pass { hold, transaction, plain_write } => {
            if let Some(hold) = hold {
                tokio::time::sleep(hold).await;
            }
            (transaction, plain_write)
        }
    };
    let counting = rules.lock().unwrap().count_capacity && target_of(&request).is_some_and(|t| t.starts_with("DynamoDB"));
    let body = body_of(&request);
    let writes = if counting { capacity::written(&operation, &body) } else { Vec::new() };
    let mut before = Vec::new();
    for w in &writes {
        before.push(probe_size(upstream, &request, w).await);
    }
    let response = forward_or_fault(&mut client, upstream, &rules, &operation, &request).await;
    release(&rules, &transaction, &plain_write);
    if let Some(response) = response {
        // Counted before the client has its answer, so each request is counted within the
        // route that made it.
        if counting {
            let mut used = capacity::of_read(&operation, &body, &body_of(&response));
            let mut sized = Vec::new();
            for (w, before) in writes.into_iter().zip(before) {
                let after = probe_size(upstream, &request, &w).await;
                sized.push((w, before, after));
            }
            used += capacity::of_writes(&sized);
            rules.lock().unwrap().capacity.push((operation, used));
        }
        let _ = client.write_all(&close_after(&response)).await;
    }
    let _ = client.shutdown().await;
}

/// The JSON body of an HTTP message (`Null` when it has none).
fn body_of(message: &[u8]) -> serde_json::Value {
    find(message, b"\r\n\r\n").and_then(|i| serde_json::from_slice(&message[i + 4..]).ok()).unwrap_or(serde_json::Value::Null)
}

/// The billed size of one item as moto holds it now (0 when absent), read with a consistent
/// GetItem sent straight to moto with the intercepted request's credentials.
async fn probe_size(upstream: SocketAddr, request: &[u8], item: &capacity::Written) -> usize {
    let head_end = find(request, b"\r\n\r\n").unwrap_or(request.len());
    let head = String::from_utf8_lossy(&request[..head_end]);
    let authorization = head.lines().find(|l| l.to_ascii_lowercase().starts_with("authorization:")).unwrap_or("Authorization: none");
    let body = serde_json::json!({"TableName": item.table, "Key": item.key, "ConsistentRead": true}).to_string();
    let probe = format!(
        "POST / HTTP/1.1\r\nHost: {upstream}\r\nContent-Type: application/x-amz-json-1.0\r\nX-Amz-Target: DynamoDB_20120810.GetItem\r\n{authorization}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let Ok(mut server) = TcpStream::connect(upstream).await else { return 0 };
    if server.write_all(probe.as_bytes()).await.is_err() {
        return 0;
    }
    let mut response = Vec::new();
    if server.read_to_end(&mut response).await.is_err() {
        return 0;
    }
    body_of(&response)["Item"].as_object().map_or(0, capacity::item_size)
}

/// Answers the client with a fault, or returns moto's answer for the caller to pass on.
async fn forward_or_fault(
    client: &mut TcpStream,
    upstream: SocketAddr,
    rules: &Mutex<Rules>,
    operation: &str,
    request: &[u8],
) -> Option<Vec<u8>> {
    match decide(rules, operation) {
        Some(Fault::Throttle) => {
            let _ = client
                .write_all(&canned("400 Bad Request", "ThrottlingException", "Rate of requests exceeds the allowed throughput."))
                .await;
        }
        Some(Fault::Fail) => {
            let _ = client.write_all(&canned("500 Internal Server Error", "InternalServerError", "Internal server error (injected)")).await;
        }
        Some(Fault::Stall) => {
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        None | Some(Fault::Pass) => {
            let mut server = TcpStream::connect(upstream).await.ok()?;
            server.write_all(&close_after(request)).await.ok()?;
            let mut response = Vec::new();
            server.read_to_end(&mut response).await.ok()?;
            return Some(response);
        }
    }
    None
}
