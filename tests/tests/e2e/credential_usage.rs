//! A credential's usage, on every store: each exchange is counted on its UTC day and the
//! address it came from is kept, by the exchange's own write; refused exchanges count nothing.

use axum::http::{Method, StatusCode};
use iam_tests::TestApp;
use serde_json::json;

#[tokio::test]
async fn usage_counts_the_exchanges_made_and_keeps_the_last_source() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let p = app.create_principal(&admin, "counted").await;
        let (key_id, key) = app.issue(&admin, &p).await;
        let listed = || async {
            let r = app.call(Method::GET, &format!("/iam/api-keys/{p}/credentials"), Some(&admin), None).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
            r.body["items"].as_array().unwrap().iter().find(|c| c["keyId"] == key_id.as_str()).cloned().unwrap()
        };
        let fresh = listed().await;
        assert_eq!(fresh["usage"], json!({"exchangesLast30Days": 0, "days": []}), "{store}");
        assert_eq!(fresh["lastUsedFrom"], json!(null), "{store}");

        for _ in 0..3 {
            let r = app.exchange_from("203.0.113.5", json!({"apiKey": key})).await;
            assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);
        }
        let wrong = format!("{}.{}", key.split_once('.').unwrap().0, "1".repeat(50));
        assert_eq!(app.exchange_from("198.51.100.9", json!({"apiKey": wrong})).await.status, StatusCode::UNAUTHORIZED);
        let refused = app.exchange_from("198.51.100.9", json!({"apiKey": key, "scope": "nothing:held"})).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{store}: {}", refused.raw);
        let r = app.exchange_from("2001:db8::7", json!({"apiKey": key})).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);

        let used = listed().await;
        let today = chrono::Utc::now().date_naive().to_string();
        assert_eq!(used["usage"], json!({"exchangesLast30Days": 4, "days": [{"date": today, "exchanges": 4}]}), "{store}: {used}");
        assert_eq!(used["lastUsedFrom"], "2001:db8::7", "{store}: the refused attempts left no trace");
    }
}
