//! What each route costs in DynamoDB capacity, measured by the fault proxy from item sizes
//! (`iam_testkit::capacity`), and the rules it measures with. `capacity_per_route` prints the
//! table BENCHMARKS.md copies; it asserts only what issue 13 fixes as targets: a warm exchange
//! writes one unit (the credential item stays under 1 KB) and reads two items (the credential,
//! and the principal carrying its role ids), even when it holds an organisation role.

use axum::http::{Method, StatusCode};
use iam_testkit::capacity::{self, Capacity, Written};
use serde_json::json;

use crate::dynamodb_conflicts::app_through_proxy;

#[test]
fn sizes_and_units_follow_the_documented_rules() {
    let item =
        json!({"keyId": {"S": "abc"}, "n": {"N": "12345"}, "ok": {"BOOL": true}, "l": {"L": [{"S": "xy"}]}, "m": {"M": {"k": {"S": "v"}}}});
    // keyId 5+3, n 1+(3+1), ok 2+1, l 1+(3+1+2), m 1+(3+1+1+1)
    assert_eq!(capacity::item_size(item.as_object().unwrap()), 8 + 5 + 3 + 7 + 7);
    let numbers = json!({"a": {"N": "100"}, "b": {"N": "-0.5"}});
    assert_eq!(capacity::item_size(numbers.as_object().unwrap()), (1 + 2) + (1 + 2));
    assert_eq!(capacity::read_units(0, true), 1.0, "a read costs at least one unit");
    assert_eq!(capacity::read_units(4096, true), 1.0);
    assert_eq!(capacity::read_units(4097, true), 2.0);
    assert_eq!(capacity::read_units(100, false), 0.5, "eventually consistent: half");
    assert_eq!(capacity::write_units(1024), 1.0);
    assert_eq!(capacity::write_units(1025), 2.0);
    let w = |transactional| (Written { table: "t".into(), key: json!({}), transactional }, 500, 1500);
    assert_eq!(capacity::of_writes(&[w(false)]).write_units, 2.0, "the larger of before and after");
    assert_eq!(capacity::of_writes(&[w(true), w(true)]).write_units, 8.0, "a transaction's items twice");
    let query = capacity::of_read("Query", &json!({"ConsistentRead": true}), &json!({"Items": [item, item]}));
    assert_eq!(query.read_units, 1.0, "a query adds its items up before rounding");
}

#[tokio::test]
async fn capacity_per_route() {
    let (app, proxy) = app_through_proxy().await;
    let admin = app.admin().await;
    proxy.count_capacity();
    let mut rows: Vec<(&str, Vec<(String, Capacity)>)> = Vec::new();
    let mut measure = |route: &'static str, calls: Vec<(String, Capacity)>| rows.push((route, calls));

    let role = json!({"name": "deployer", "permissions": ["ci:deploy"], "principalTypes": ["ApiKey"]});
    let role = app.call(Method::POST, "/iam/roles", Some(&admin), Some(role)).await;
    assert_eq!(role.status, StatusCode::CREATED, "{}", role.raw);
    measure("POST /iam/roles", proxy.take_capacity());
    let role_id = role.str("id").to_owned();
    let created = app.call(Method::POST, "/iam/api-keys", Some(&admin), Some(json!({"displayName": "metered"}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.raw);
    measure("POST /iam/api-keys", proxy.take_capacity());
    let principal = created.str("id").to_owned();
    let uri = format!("/iam/api-keys/{principal}");
    let assigned = app.call(Method::PUT, &format!("{uri}/role-assignments/iam-viewer"), Some(&admin), None).await;
    assert!(assigned.status.is_success(), "{}", assigned.raw);
    measure("PUT …/role-assignments/{roleId}", proxy.take_capacity());
    // An organisation role too: its item is read once per instance, never per exchange.
    let assigned = app.call(Method::PUT, &format!("{uri}/role-assignments/{role_id}"), Some(&admin), None).await;
    assert!(assigned.status.is_success(), "{}", assigned.raw);
    proxy.take_capacity();
    let issued = app.call(Method::POST, &format!("{uri}/credentials"), Some(&admin), Some(json!({"name": "ci"}))).await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.raw);
    measure("POST …/credentials", proxy.take_capacity());
    let key = issued.str("apiKey").to_owned();
    let key_id = issued.body["credential"]["keyId"].as_str().unwrap().to_owned();

    assert_eq!(app.exchange_json(json!({"apiKey": key})).await.status, StatusCode::OK);
    measure("POST /iam/auth/token (cold: first use on this instance)", proxy.take_capacity());
    assert_eq!(app.exchange_json(json!({"apiKey": key})).await.status, StatusCode::OK);
    let warm = proxy.take_capacity();
    measure("POST /iam/auth/token (warm)", warm.clone());
    // A mistyped key fails its checksum before any read; a guessed secret (its checksum made
    // to fit) costs the credential read, and no argon2.
    let mistyped = format!("{}A", &key[..key.len() - 1]);
    assert_eq!(app.exchange_json(json!({"apiKey": mistyped})).await.status, StatusCode::UNAUTHORIZED);
    measure("POST /iam/auth/token (mistyped key)", proxy.take_capacity());
    let key_part = key.split_once('.').unwrap().0;
    let body = "1".repeat(44);
    let sum = format!("{:0>6}", base62::encode(crc32fast::hash(format!("{key_part}.{body}").as_bytes())));
    let guessed = json!({"apiKey": format!("{key_part}.{body}{sum}")});
    assert_eq!(app.exchange_json(guessed).await.status, StatusCode::UNAUTHORIZED);
    measure("POST /iam/auth/token (guessed secret)", proxy.take_capacity());

    for (route, path) in [
        ("GET /iam/api-keys", "/iam/api-keys".to_owned()),
        ("GET /iam/api-keys/{principalId}", uri.clone()),
        ("GET …/credentials", format!("{uri}/credentials")),
        ("GET …/role-assignments", format!("{uri}/role-assignments")),
        ("GET /iam/roles", "/iam/roles".to_owned()),
        ("GET /iam/whoami", "/iam/whoami".to_owned()),
    ] {
        let r = app.call(Method::GET, &path, Some(&admin), None).await;
        assert_eq!(r.status, StatusCode::OK, "{route}: {}", r.raw);
        measure(route, proxy.take_capacity());
    }
    let etag = app.call(Method::GET, &uri, Some(&admin), None).await.header("etag").unwrap().to_owned();
    proxy.take_capacity();
    let patched = app.call_with(Method::PATCH, &uri, Some(&admin), Some(json!({"status": "Suspended"})), &[("if-match", &etag)]).await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.raw);
    measure("PATCH /iam/api-keys/{principalId} (status)", proxy.take_capacity());
    let revoked = app.call(Method::POST, &format!("{uri}/credentials/{key_id}/revoke"), Some(&admin), None).await;
    assert!(revoked.status.is_success(), "{}", revoked.raw);
    measure("POST …/credentials/{keyId}/revoke", proxy.take_capacity());
    let unassigned = app.call(Method::DELETE, &format!("{uri}/role-assignments/iam-viewer"), Some(&admin), None).await;
    assert!(unassigned.status.is_success(), "{}", unassigned.raw);
    measure("DELETE …/role-assignments/{roleId}", proxy.take_capacity());

    println!("| route | DynamoDB calls | read units | write units |\n|---|---|---|---|");
    for (route, calls) in &rows {
        let mut total = Capacity::default();
        for (_, c) in calls {
            total += *c;
        }
        let ops: Vec<&str> = calls.iter().map(|(op, _)| op.as_str()).collect();
        println!("| {route} | {} | {} | {} |", ops.join(", "), total.read_units, total.write_units);
    }
    let writes: f64 = warm.iter().map(|(_, c)| c.write_units).sum();
    assert_eq!(writes, 1.0, "a warm exchange writes one unit: {warm:?}");
    assert!(warm.iter().all(|(_, c)| c.read_units <= 1.0), "every read of a warm exchange is one unit: {warm:?}");
    let reads = warm.iter().filter(|(_, c)| c.read_units > 0.0).count();
    assert_eq!(reads, 2, "a warm exchange reads its credential and its principal, nothing else: {warm:?}");
}
