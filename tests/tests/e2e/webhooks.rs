//! Webhooks end to end: endpoints managed through the API, deliveries made by the same code as
//! the delivery function, received by a sink whose signature check is the `standardwebhooks`
//! package from PyPI (scripts/webhook_sink.py), not ours. Retries against a sink that fails
//! first, a rotation's overlap, the outbound rules at creation and after DNS, a redirect, and
//! a scan of everything stored and sent for a secret.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use iam_shared::audit::AuditRecord;
use iam_shared::events::{LifecycleEvent, lifecycle_event};
use iam_shared::outbound::Outbound;
use iam_shared::store::{EmbeddedStore, Store};
use iam_shared::webhooks::WebhookKey;
use iam_shared::webhooks::delivery::{Deliverer, DeliveryState};
use iam_shared::webhooks::manage::WebhookKeySource;
use iam_tests::TestApp;
use serde_json::{Value, json};

pub(crate) struct Sink {
    child: Child,
    url: String,
}

impl Sink {
    fn start(fail_first: u32) -> Self {
        let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/webhook_sink.py");
        let mut child = Command::new(python)
            .args([script, "--fail-first", &fail_first.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("the webhook sink (scripts/python-tools installs standardwebhooks into .venv)");
        let mut port = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut port).unwrap();
        Self { child, url: format!("http://127.0.0.1:{}", port.trim()) }
    }

    async fn received(&self) -> Vec<Value> {
        reqwest::get(format!("{}/_received", self.url)).await.unwrap().json().await.unwrap()
    }

    /// Per request received, whether the package accepts its signature under `secret`.
    async fn verify(&self, secret: &str) -> Vec<Value> {
        let r = reqwest::Client::new().post(format!("{}/_verify", self.url)).json(&json!({"secret": secret})).send().await.unwrap();
        r.json().await.unwrap()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    app: TestApp,
    store: Arc<dyn Store>,
    key: Arc<WebhookKey>,
    outbound: Outbound,
}

async fn setup(allow_loopback: bool) -> Setup {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().unwrap());
    let key = Arc::new(WebhookKey::generate());
    let config = iam_api::config::Config {
        outbound_allow_loopback: allow_loopback,
        webhook_key: Some(Arc::new(WebhookKeySource::Static(key.clone()))),
        ..iam_tests::config()
    };
    let app = TestApp::with_state(iam_tests::state_with_config(store.clone(), &config).await).await;
    let outbound = Outbound::new(iam_api::config::webhook_outbound_rules(allow_loopback)).unwrap();
    Setup { app, store, key, outbound }
}

impl Setup {
    fn deliverer(&self) -> Deliverer<'_, dyn Store> {
        Deliverer { store: self.store.as_ref(), outbound: &self.outbound, key: &self.key }
    }

    /// The organisation's newest events, as the stream would carry them.
    async fn events(&self, admin: &str) -> Vec<LifecycleEvent> {
        let trail = self.app.call(Method::GET, "/iam/audit-events?limit=200&order=oldest", Some(admin), None).await;
        let records: Vec<AuditRecord> = serde_json::from_value(trail.body["items"].clone()).unwrap();
        records.iter().filter_map(lifecycle_event).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_deliveries_are_verified_independently_retried_and_recorded() {
    let s = setup(true).await;
    let admin = s.app.admin().await;
    let sink = Sink::start(1);
    let created = s.app.call(Method::POST, "/iam/webhooks", Some(&admin), Some(json!({"url": format!("{}/hook", sink.url)}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.raw);
    let secret = created.str("secret").to_owned();
    assert!(secret.starts_with("whsec_"));
    let id = created.body["webhook"]["id"].as_str().unwrap().to_owned();

    // An event; its first attempt meets a 503, its retry a 204.
    let p = s.app.create_principal(&admin, "billing sync").await;
    let events = s.events(&admin).await;
    let created_event =
        events.iter().find(|e| e.detail_type == "Principal Created" && e.detail.principal_id.as_deref() == Some(&p)).unwrap();
    let retries = s.deliverer().deliver(created_event, iam_shared::model::now()).await.unwrap();
    assert_eq!(retries.len(), 1, "the 503 is retried");
    let pending = retries.into_iter().next().unwrap();
    assert_eq!(pending.delivery.state, DeliveryState::Pending);
    assert_eq!((pending.due() - pending.delivery.attempts[0].at).num_seconds(), 5, "the first backoff");
    assert!(s.deliverer().retry(pending, iam_shared::model::now()).await.unwrap().is_none(), "delivered");

    let deliveries = s.app.call(Method::GET, &format!("/iam/webhooks/{id}/deliveries"), Some(&admin), None).await;
    assert_eq!(deliveries.status, StatusCode::OK, "{}", deliveries.raw);
    let delivery = &deliveries.body["items"][0];
    assert_eq!(delivery["state"], "delivered", "{delivery}");
    assert_eq!(delivery["attemptCount"], 2);
    let statuses: Vec<&Value> = delivery["attempts"].as_array().unwrap().iter().map(|a| &a["status"]).collect();
    assert_eq!(statuses, [&json!(503), &json!(204)]);

    let received = sink.received().await;
    assert_eq!(received.len(), 2);
    for r in &received {
        assert_eq!(r["headers"]["webhook-id"], created_event.detail.event_id, "the same id on every attempt");
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["type"], "principal.created");
        assert_eq!(body["data"]["principalId"], p.as_str());
    }
    let verdicts = sink.verify(&secret).await;
    assert!(verdicts.iter().all(|v| v["verified"] == true), "{verdicts:?}");
    let other = s.app.call(Method::POST, "/iam/webhooks", Some(&admin), Some(json!({"url": format!("{}/other", sink.url)}))).await;
    let wrong = sink.verify(other.str("secret")).await;
    assert!(wrong.iter().all(|v| v["verified"] == false), "another endpoint's secret verifies nothing: {wrong:?}");
    let other_id = other.body["webhook"]["id"].as_str().unwrap().to_owned();
    assert_eq!(s.app.call(Method::DELETE, &format!("/iam/webhooks/{other_id}"), Some(&admin), None).await.status, StatusCode::NO_CONTENT);

    // A rotation: the new secret is shown once, and both sign for a day.
    let rotated = s.app.call(Method::POST, &format!("/iam/webhooks/{id}/rotate-secret"), Some(&admin), None).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.raw);
    let new_secret = rotated.str("secret").to_owned();
    assert_ne!(new_secret, secret);
    s.app.call(Method::PATCH, &format!("/iam/api-keys/{p}"), Some(&admin), Some(json!({"displayName": "billing sync (EU)"}))).await;
    let changed = s.events(&admin).await.into_iter().find(|e| e.detail_type == "Principal Changed").unwrap();
    assert!(s.deliverer().deliver(&changed, iam_shared::model::now()).await.unwrap().is_empty());
    let last = |v: Vec<Value>| v.last().cloned().unwrap();
    assert_eq!(last(sink.verify(&new_secret).await)["verified"], true);
    assert_eq!(last(sink.verify(&secret).await)["verified"], true, "the previous secret still verifies during the overlap");

    // Subscriptions: an endpoint that wants only warnings is not sent this.
    let only = json!({"eventTypes": ["credential.expiring"]});
    s.app.call(Method::PATCH, &format!("/iam/webhooks/{id}"), Some(&admin), Some(only)).await;
    assert!(s.deliverer().deliver(&changed, iam_shared::model::now()).await.unwrap().is_empty());
    assert_eq!(sink.received().await.len(), 3, "nothing more sent");

    // Nothing stored, listed or sent carries a secret.
    let secrets = [secret.as_str(), new_secret.as_str()];
    let trail = s.app.call(Method::GET, "/iam/audit-events?limit=200", Some(&admin), None).await.raw;
    let listed = s.app.call(Method::GET, "/iam/webhooks", Some(&admin), None).await.raw;
    let deliveries = s.app.call(Method::GET, &format!("/iam/webhooks/{id}/deliveries"), Some(&admin), None).await.raw;
    let sent = serde_json::to_string(&sink.received().await).unwrap();
    for text in [&trail, &listed, &deliveries, &sent] {
        for secret in secrets {
            let bare = secret.trim_start_matches("whsec_");
            assert!(!text.contains(bare), "a webhook secret leaked: {text}");
        }
        assert!(!text.contains("whsec_"), "{text}");
    }
    assert!(trail.contains("webhook.create") && trail.contains("webhook.rotate_secret") && trail.contains("webhook.delete"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_obey_the_outbound_rules_when_set_and_when_delivered_to() {
    let s = setup(false).await;
    let admin = s.app.admin().await;
    for refused in [
        "http://hooks.example.com/",
        "https://10.1.2.3/",
        "https://169.254.169.254/latest/meta-data",
        "https://[fd00:ec2::254]/",
        "https://[::ffff:169.254.169.254]/",
        "https://127.0.0.1/",
        "https://user:password@hooks.example.com/",
        "ftp://hooks.example.com/",
    ] {
        let r = s.app.call(Method::POST, "/iam/webhooks", Some(&admin), Some(json!({"url": refused}))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{refused}: {}", r.raw);
    }
    let r = s
        .app
        .call(Method::POST, "/iam/webhooks", Some(&admin), Some(json!({"url": "https://hooks.example.com/", "eventTypes": ["nope"]})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    assert!(
        s.app.call(Method::GET, "/iam/webhooks", Some(&admin), None).await.body["items"].as_array().unwrap().is_empty(),
        "nothing written"
    );

    // A name is checked where it resolves: `localhost` is loopback, refused at delivery.
    let sink = Sink::start(0);
    let port = sink.url.rsplit(':').next().unwrap().to_owned();
    let named =
        s.app.call(Method::POST, "/iam/webhooks", Some(&admin), Some(json!({"url": format!("https://localhost:{port}/hook")}))).await;
    assert_eq!(named.status, StatusCode::CREATED, "{}", named.raw);
    let id = named.body["webhook"]["id"].as_str().unwrap().to_owned();
    s.app.create_principal(&admin, "someone").await;
    let event = s.events(&admin).await.into_iter().find(|e| e.detail_type == "Principal Created").unwrap();
    let retries = s.deliverer().deliver(&event, iam_shared::model::now()).await.unwrap();
    assert_eq!(retries.len(), 1);
    let error = retries[0].delivery.attempts[0].error.clone().unwrap();
    assert!(error.contains("not a public address"), "{error}");
    assert!(sink.received().await.is_empty(), "nothing reached the loopback listener");

    // Seven attempts in all, then the delivery has failed.
    let mut pending = retries.into_iter().next();
    let mut attempts = 1;
    while let Some(p) = pending {
        pending = s.deliverer().retry(p, iam_shared::model::now()).await.unwrap();
        attempts += 1;
    }
    assert_eq!(attempts, 7);
    let listed = s.app.call(Method::GET, &format!("/iam/webhooks/{id}/deliveries"), Some(&admin), None).await;
    assert_eq!(listed.body["items"][0]["state"], "failed", "{}", listed.raw);
    assert_eq!(listed.body["items"][0]["attempts"].as_array().unwrap().len(), 5, "the last five attempts are kept");

    // Over the operator's switch, a redirect is still not followed.
    let local = setup(true).await;
    let admin = local.app.admin().await;
    let redirecting = json!({"url": format!("{}/redirect", sink.url)});
    assert_eq!(local.app.call(Method::POST, "/iam/webhooks", Some(&admin), Some(redirecting)).await.status, StatusCode::CREATED);
    local.app.create_principal(&admin, "someone").await;
    let event = local.events(&admin).await.into_iter().find(|e| e.detail_type == "Principal Created").unwrap();
    let retries = local.deliverer().deliver(&event, iam_shared::model::now()).await.unwrap();
    let error = retries[0].delivery.attempts[0].error.clone().unwrap();
    assert!(error.contains("redirect"), "{error}");
}

/// The AWS path on the DynamoDB-compatible server: the delivery function fed with the audit
/// table's stream as `GetRecords` reads it queues the event's delivery; its first attempt, from
/// the queue, meets a 503 and goes back with the first backoff as its delay; the message,
/// received when due, is the retry that delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_function_delivers_from_the_stream_and_retries_through_the_queue() {
    use iam_functions::deliver_webhooks::{Delivery, DeliveryEvent, SqsDeliveryQueue};
    let (store, tables) = iam_testkit::fresh_store_with_tables().await;
    let sdk = iam_testkit::sdk_config().await;
    let view = aws_sdk_dynamodb::types::StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(aws_sdk_dynamodb::types::StreamViewType::NewImage)
        .build()
        .unwrap();
    let updated =
        aws_sdk_dynamodb::Client::new(&sdk).update_table().table_name(&tables.audit).stream_specification(view).send().await.unwrap();
    let stream_arn = updated.table_description().unwrap().latest_stream_arn().unwrap().to_owned();
    let key = Arc::new(WebhookKey::generate());
    let config = iam_api::config::Config {
        outbound_allow_loopback: true,
        webhook_key: Some(Arc::new(WebhookKeySource::Static(key.clone()))),
        ..iam_tests::config()
    };
    let app = TestApp::with_state(iam_tests::state_with_config(store.clone(), &config).await).await;
    let admin = app.admin().await;
    let sink = Sink::start(1);
    let created = app
        .call(
            Method::POST,
            "/iam/webhooks",
            Some(&admin),
            Some(json!({"url": format!("{}/hook", sink.url), "eventTypes": ["principal.created"]})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.raw);
    let secret = created.str("secret").to_owned();
    let p = app.create_principal(&admin, "streamed").await;

    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url =
        sqs.create_queue().queue_name(iam_testkit::unique("webhook-retries")).send().await.unwrap().queue_url().unwrap().to_owned();
    let outbound = Outbound::new(iam_api::config::webhook_outbound_rules(true)).unwrap();
    let queue = SqsDeliveryQueue { client: sqs.clone(), url: queue_url.clone() };
    let delivery = Delivery { store: store.as_ref(), outbound: &outbound, key: &key, queue: &queue };
    let records = crate::event_publishing::stream_records(&stream_arn).await;
    assert!(records.iter().all(|r| r["eventSource"] == "aws:dynamodb"), "as Lambda passes them on");
    let batch: DeliveryEvent = serde_json::from_value(json!({"Records": records})).unwrap();
    let answer = delivery.handle(batch, iam_shared::model::now()).await;
    assert!(answer.batch_item_failures.is_empty(), "{answer:?}");
    assert!(sink.received().await.is_empty(), "the stream only queues: a slow endpoint never holds up the shard");

    // Each message is an attempt: the first meets the 503 and goes back with the 5 s backoff,
    // the second delivers.
    for expected in [1, 2] {
        let mut message = None;
        for _ in 0..40 {
            let got = sqs.receive_message().queue_url(&queue_url).send().await.unwrap();
            if let Some(m) = got.messages().first() {
                message = Some((m.message_id().unwrap().to_owned(), m.receipt_handle().unwrap().to_owned(), m.body().unwrap().to_owned()));
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        let (message_id, receipt, body) = message.expect("the delivery, visible once its delay passed");
        assert!(!body.contains(secret.trim_start_matches("whsec_")), "no secret in the queue");
        let attempt = json!({"Records": [{"eventSource": "aws:sqs", "messageId": message_id, "body": body}]});
        let answer = delivery.handle(serde_json::from_value(attempt).unwrap(), iam_shared::model::now()).await;
        assert!(answer.batch_item_failures.is_empty(), "an endpoint's 503 is the delivery's retry, not Lambda's: {answer:?}");
        sqs.delete_message().queue_url(&queue_url).receipt_handle(receipt).send().await.unwrap();
        assert_eq!(sink.received().await.len(), expected);
    }

    let received = sink.received().await;
    assert_eq!(received.len(), 2);
    assert_eq!(received[0]["headers"]["webhook-id"], received[1]["headers"]["webhook-id"]);
    let sent: Value = serde_json::from_str(received[1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["data"]["principalId"], p.as_str());
    assert!(sink.verify(&secret).await.iter().all(|v| v["verified"] == true));
    let id = created.body["webhook"]["id"].as_str().unwrap();
    let listed = app.call(Method::GET, &format!("/iam/webhooks/{id}/deliveries"), Some(&admin), None).await;
    assert_eq!(listed.body["items"][0]["state"], "delivered", "{}", listed.raw);
    assert_eq!(listed.body["items"][0]["attemptCount"], 2);
}

/// An endpoint receives the organisation's trail as events: directing one takes the trail's
/// permission as well as the webhooks', so nobody hands a receiver more than they can read.
#[tokio::test]
async fn directing_events_takes_the_trails_permission_too() {
    let s = setup(false).await;
    let admin = s.app.admin().await;
    let (_, manager, _) = crate::authority::holder_with_role(&s.app, &admin, &iam_testkit::unique("hooks"), &["iam:webhooks:manage"]).await;
    assert_eq!(s.app.call(Method::GET, "/iam/webhooks", Some(&manager), None).await.status, StatusCode::OK);
    let refused = s.app.call(Method::POST, "/iam/webhooks", Some(&manager), Some(json!({"url": "https://hooks.example.com/"}))).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.raw);
    assert!(refused.str("detail").contains("iam:audit:read"), "{}", refused.raw);
    let (_, both, _) =
        crate::authority::holder_with_role(&s.app, &admin, &iam_testkit::unique("hooks"), &["iam:webhooks:manage", "iam:audit:read"]).await;
    let created = s.app.call(Method::POST, "/iam/webhooks", Some(&both), Some(json!({"url": "https://hooks.example.com/"}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.raw);
}
