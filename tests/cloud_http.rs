//! `dbmirror-cloud` over real HTTP on port 0: every endpoint and error code, the streamed
//! long-poll (returns as soon as records exist, waits otherwise), and the injected faults.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dbmirror::clock::now_ms;
use dbmirror::cloud::crm::published_tables;
use dbmirror::cloud::http::{Cloud, spawn};
use dbmirror::cloud::log::EventLog;
use dbmirror::cloud::service::State;
use dbmirror::cloud::tenant::{Tenant, TenantConfig};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value as Json, json};

struct Harness {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    cloud: Arc<Cloud>,
}

struct Reply {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
    /// The body ended with an error (a connection cut mid-body).
    cut: bool,
}

impl Reply {
    fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap_or(Json::Null)
    }
    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
    }
}

impl Harness {
    async fn start(retention: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut state = State::new(EventLog::in_memory(retention), base.clone());
        let config =
            TenantConfig { context: "cust1".into(), seed: 3, rows_per_table: 4, partitions: 2, with_schema: true };
        state.add_tenant(Tenant::new(config, published_tables()), now_ms()).unwrap();
        state.add_partner("acme", "s3cret", vec!["cust1".into()]);
        let cloud = Cloud::new(state, "admin-token".into());
        spawn(listener, cloud.clone(), 0);
        Harness { base, client: Client::builder(TokioExecutor::new()).build_http(), cloud }
    }

    async fn call(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Option<Json>) -> Reply {
        let mut req = Request::builder().method(method).uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let response = self.client.request(req.body(Full::new(body)).unwrap()).await.unwrap();
        let (parts, mut incoming) = response.into_parts();
        let mut collected = Vec::new();
        let mut cut = false;
        while let Some(frame) = incoming.frame().await {
            match frame {
                Ok(f) => collected.extend_from_slice(f.data_ref().map(|d| &d[..]).unwrap_or_default()),
                Err(_) => {
                    cut = true;
                    break;
                }
            }
        }
        Reply { status: parts.status, headers: parts.headers, body: Bytes::from(collected), cut }
    }

    /// Provisions through the device grant and the browser form; returns the grant.
    async fn provision(&self, name: &str) -> Json {
        let start = self.call(Method::POST, "/api/v1/provisioning", &[], None).await.json();
        let device = json!({"device_code": start["device_code"]});
        let pending = self.call(Method::POST, "/api/v1/provisioning/token", &[], Some(device.clone())).await;
        assert_eq!((pending.status, pending.code().as_str()), (StatusCode::BAD_REQUEST, "authorization_pending"));
        let page = self
            .call(Method::GET, &format!("/provision?user_code={}", start["user_code"].as_str().unwrap()), &[], None)
            .await;
        assert!(String::from_utf8_lossy(&page.body).contains("Session Name"));
        let form = format!(
            "user_code={}&tenant=cust1&session_name={name}&action=approve",
            start["user_code"].as_str().unwrap()
        );
        let req = Request::post(format!("{}/provision", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .unwrap();
        let done = self.client.request(req).await.unwrap();
        assert_eq!(done.status(), StatusCode::OK);
        let granted = self.call(Method::POST, "/api/v1/provisioning/token", &[], Some(device)).await;
        assert_eq!(granted.status, StatusCode::OK, "{:?}", granted.json());
        granted.json()
    }

    async fn api(&self, method: Method, token: &str, path: &str, body: Option<Json>) -> Reply {
        let auth = format!("Bearer {token}");
        self.call(
            method,
            &format!("/api/v1/replication/cust1/{path}"),
            &[("authorization", &auth), ("x-client-version", "0.1.0")],
            body,
        )
        .await
    }

    async fn admin(&self, path: &str, body: Json) -> Reply {
        self.call(Method::POST, &format!("/admin/{path}"), &[("authorization", "Bearer admin-token")], Some(body)).await
    }
}

fn all_partitions(offsets: [i64; 2], max_wait_ms: u64) -> Json {
    json!({
        "positions": [
            {"topic": "cust1-cdc", "partition": 0, "offset": offsets[0]},
            {"topic": "cust1-cdc", "partition": 1, "offset": offsets[1]},
        ],
        "max_events": 10_000,
        "max_wait_ms": max_wait_ms,
    })
}

fn lines(body: &Bytes) -> Vec<Json> {
    body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_tokens_and_the_replication_api() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let grant = h.provision("Reporting").await;
    assert_eq!(grant["session"]["replication_id"], "reporting");
    let token = grant["tokens"]["access_token"].as_str().unwrap().to_owned();
    let refresh = grant["tokens"]["refresh_token"].as_str().unwrap().to_owned();

    // Session, schema with exact types and hashes, ground truth.
    assert_eq!(h.api(Method::GET, &token, "session", None).await.json()["tenant_context_id"], "cust1");
    let schema = h.api(Method::GET, &token, "schema", None).await.json();
    let tables = schema["tables"].as_array().unwrap();
    assert_eq!(tables.len(), published_tables().len());
    assert!(tables.iter().any(|t| t["columns"].as_array().unwrap().iter().any(|c| c["type"] == "datetime2(7)")));
    assert!(tables.iter().all(|t| t["schema_hash"].as_str().unwrap().len() == 16));
    let truth = h.api(Method::GET, &token, "ground-truth", None).await.json();
    assert_eq!(truth["tables"].as_array().unwrap().len(), published_tables().len());

    // The initial snapshot streams as NDJSON record lines; an empty fetch waits.
    let first = h.api(Method::POST, &token, "fetch", Some(all_partitions([0, 0], 5_000))).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.headers["content-type"], "application/x-ndjson");
    let records = lines(&first.body);
    assert_eq!(records.len(), published_tables().len() * 4);
    assert!(records.iter().all(|r| r["value"]["payload"]["op"] == "r"));
    let ends = [0, 1].map(|p| records.iter().filter(|r| r["partition"] == p).count() as i64);
    let started = Instant::now();
    let empty = h.api(Method::POST, &token, "fetch", Some(all_partitions(ends, 300))).await;
    assert!(lines(&empty.body).is_empty() && started.elapsed() >= Duration::from_millis(250));

    // A long-poll returns as soon as a change is appended.
    let waiter = {
        let (base, token) = (h.base.clone(), token.clone());
        tokio::spawn(async move {
            let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let req = Request::post(format!("{base}/api/v1/replication/cust1/fetch"))
                .header("authorization", format!("Bearer {token}"))
                .header("x-client-version", "0.1.0")
                .body(Full::new(Bytes::from(all_partitions(ends, 20_000).to_string())))
                .unwrap();
            let started = Instant::now();
            let body = client.request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
            (started.elapsed(), lines(&body).len())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let changed = h.admin("cust1/actions/changes", json!({"count": 5})).await;
    assert_eq!(changed.status, StatusCode::OK);
    let (waited, got) = waiter.await.unwrap();
    assert!(got >= 5 && waited < Duration::from_secs(10), "woke after {waited:?} with {got}");

    // Commit, status and lag.
    let commit = json!({"offsets": [{"topic": "cust1-cdc", "partition": 0, "offset": ends[0] - 1}]});
    assert_eq!(h.api(Method::POST, &token, "commit", Some(commit)).await.status, StatusCode::OK);
    let status = h.api(Method::GET, &token, "status", None).await.json();
    let p0 = &status["partitions"][0];
    assert_eq!(p0["committed"], ends[0] - 1);
    assert!(p0["lag"].as_i64().unwrap() >= 0);

    // Resync of one table appends an incremental snapshot of just it.
    let resync = h.api(Method::POST, &token, "resync", Some(json!({"tables": ["crm7.person", "crm7.nope"]}))).await;
    assert_eq!((resync.status, resync.json()["tables"].clone()), (StatusCode::ACCEPTED, json!(["crm7.person"])));
    assert_eq!(h.api(Method::POST, &token, "resync", Some(json!({"tables": ["person"]}))).await.code(), "bad_table");

    // Refresh rotates; reuse revokes the session.
    let rotated = h.call(Method::POST, "/api/v1/token", &[], Some(json!({"refresh_token": refresh}))).await.json();
    let new_token = rotated["tokens"]["access_token"].as_str().unwrap().to_owned();
    assert_eq!(h.api(Method::GET, &new_token, "session", None).await.status, StatusCode::OK);
    let reused = h.call(Method::POST, "/api/v1/token", &[], Some(json!({"refresh_token": refresh}))).await;
    assert_eq!((reused.status, reused.code().as_str()), (StatusCode::FORBIDDEN, "token_reused"));
    let revoked = h.api(Method::GET, &new_token, "session", None).await;
    assert_eq!((revoked.status, revoked.code().as_str()), (StatusCode::FORBIDDEN, "session_revoked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes_for_every_refusal() {
    let h = Harness::start(Duration::from_millis(200)).await;
    let grant = h.provision("ops").await;
    let token = grant["tokens"]["access_token"].as_str().unwrap().to_owned();
    let session = grant["session"]["session_id"].as_str().unwrap().to_owned();

    let missing = h.call(Method::GET, "/api/v1/replication/cust1/session", &[], None).await;
    assert_eq!((missing.status, missing.code().as_str()), (StatusCode::UNAUTHORIZED, "token_missing"));
    let bad = h.api(Method::GET, "x.y.z", "session", None).await;
    assert_eq!(bad.code(), "token_invalid");
    let old = h
        .call(
            Method::GET,
            "/api/v1/replication/cust1/session",
            &[("authorization", &format!("Bearer {token}")), ("x-client-version", "0.0.1")],
            None,
        )
        .await;
    assert_eq!((old.status.as_u16(), old.code().as_str()), (426, "client_too_old"));
    assert_eq!(old.json()["error"]["minimum_version"], "0.1.0");
    assert_eq!(h.admin("min-client-version", json!({"version": "9.0.0"})).await.status, StatusCode::OK);
    assert_eq!(h.api(Method::GET, &token, "session", None).await.code(), "client_too_old");
    h.admin("min-client-version", json!({"version": "0.1.0"})).await;
    let unauthorized_admin =
        h.call(Method::POST, "/admin/cust1/reset-offsets", &[("authorization", "Bearer nope")], None).await;
    assert_eq!(unauthorized_admin.code(), "admin_only");

    // Injected 5xx with Retry-After, expired tokens and a skewed Date header.
    h.admin(
        &format!("sessions/{session}/faults"),
        json!({"rate_limit_next": 1, "fail_next": 1, "clock_skew_secs": 600}),
    )
    .await;
    let limited = h.api(Method::GET, &token, "session", None).await;
    assert_eq!((limited.status.as_u16(), limited.code().as_str()), (429, "rate_limited"));
    assert_eq!(limited.headers["retry-after"], "2");
    let failed = h.api(Method::GET, &token, "session", None).await;
    assert_eq!(
        (failed.status, failed.headers["retry-after"].to_str().unwrap()),
        (StatusCode::SERVICE_UNAVAILABLE, "1")
    );
    let skewed = h.api(Method::GET, &token, "session", None).await;
    let date = skewed.headers["date"].to_str().unwrap().to_owned();
    assert_ne!(date, dbmirror::clock::http_date(now_ms() / 1000), "the Date header is 10 minutes ahead");
    // The client reads Retry-After into the error, for its backoff.
    h.admin(&format!("sessions/{session}/faults"), json!({"rate_limit_next": 1})).await;
    let client = dbmirror::source::client::HttpClient::new(&h.base, None).unwrap();
    let refused = client.json(Method::GET, "/api/v1/replication/cust1/session", Some(&token), None).await.unwrap_err();
    assert_eq!(refused.retry_after(), Some(Duration::from_secs(2)), "{refused}");
    h.admin(&format!("sessions/{session}/faults"), json!({"expire_tokens": true})).await;
    assert_eq!(h.api(Method::GET, &token, "session", None).await.code(), "token_expired");
    h.admin(&format!("sessions/{session}/faults"), json!({})).await;

    // Suspended tenant, then resume: offsets reset to a fresh snapshot.
    h.admin("cust1/actions/suspend", json!({})).await;
    let suspended = h.api(Method::GET, &token, "session", None).await;
    assert_eq!((suspended.status.as_u16(), suspended.code().as_str()), (423, "tenant_suspended"));
    let resumed = h.admin("cust1/actions/resume", json!({})).await.json();
    let reset = h.api(Method::POST, &token, "fetch", Some(all_partitions([0, 0], 0))).await;
    assert_eq!((reset.status, reset.code().as_str()), (StatusCode::CONFLICT, "offsets_reset"));
    assert_eq!(reset.json()["error"]["positions"], resumed["positions"]);
    let epoch = reset.json()["error"]["reset_epoch"].as_u64().unwrap();
    assert_eq!(epoch, 1);
    let handled = |mut body: Json| {
        body["reset_epoch"] = json!(epoch);
        body
    };

    // Retention: after a purge, old offsets are gone with a distinct code.
    tokio::time::sleep(Duration::from_millis(400)).await;
    h.admin("cust1/actions/purge", json!({})).await;
    let positions = resumed["positions"].as_array().unwrap();
    let from: Vec<i64> = positions.iter().map(|p| p["offset"].as_i64().unwrap()).collect();
    let purged = h.api(Method::POST, &token, "fetch", Some(handled(all_partitions([from[0], from[1]], 0)))).await;
    assert_eq!((purged.status.as_u16(), purged.code().as_str()), (410, "offset_purged"), "{:?}", purged.json());
    let beyond = h.api(Method::POST, &token, "fetch", Some(handled(all_partitions([1 << 40, 0], 0)))).await;
    assert_eq!(beyond.code(), "offset_out_of_range");

    // An operator's full reset: a new snapshot, and every session is told where it starts.
    let reset_all =
        h.call(Method::POST, "/admin/cust1/reset-offsets", &[("authorization", "Bearer admin-token")], None).await;
    assert_eq!(reset_all.status, StatusCode::OK);
    let again = h.api(Method::POST, &token, "fetch", Some(handled(all_partitions([from[0], from[1]], 0)))).await;
    assert_eq!(again.code(), "offsets_reset");
    assert_eq!(again.json()["error"]["positions"], reset_all.json()["positions"]);

    // Revocation by an operator.
    h.admin(&format!("sessions/{session}/revoke"), json!({})).await;
    assert_eq!(h.api(Method::GET, &token, "session", None).await.code(), "session_revoked");
    assert_eq!(h.call(Method::GET, "/nope", &[], None).await.code(), "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_api_and_body_faults() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    use base64::Engine as _;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("acme:s3cret"));
    let wrong = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("acme:nope"));
    assert_eq!(
        h.call(Method::GET, "/api/v1/partner/tenants", &[("authorization", &wrong)], None).await.code(),
        "invalid_client"
    );
    let tenants = h.call(Method::GET, "/api/v1/partner/tenants", &[("authorization", &basic)], None).await.json();
    assert_eq!(tenants["tenants"], json!(["cust1"]));
    let created = h
        .call(
            Method::POST,
            "/api/v1/partner/sessions",
            &[("authorization", &basic)],
            Some(json!({"tenant": "cust1", "session_name": "acme-bi"})),
        )
        .await
        .json();
    let token = created["tokens"]["access_token"].as_str().unwrap().to_owned();
    let session = created["session"]["session_id"].as_str().unwrap().to_owned();
    let dup = h
        .call(
            Method::POST,
            "/api/v1/partner/sessions",
            &[("authorization", &basic)],
            Some(json!({"tenant": "cust1", "session_name": "ACME-BI"})),
        )
        .await;
    assert_eq!(dup.code(), "session_exists");
    let listed = h.call(Method::GET, "/api/v1/partner/sessions", &[("authorization", &basic)], None).await.json();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1);

    let full = lines(&h.api(Method::POST, &token, "fetch", Some(all_partitions([0, 0], 0))).await.body);
    h.admin(&format!("sessions/{session}/faults"), json!({"drop_mid_body_next": 1})).await;
    let dropped = h.api(Method::POST, &token, "fetch", Some(all_partitions([0, 0], 0))).await;
    assert!(dropped.cut, "the connection is cut mid-body");
    h.admin(&format!("sessions/{session}/faults"), json!({"truncate_next": 1})).await;
    let truncated = h.api(Method::POST, &token, "fetch", Some(all_partitions([0, 0], 0))).await;
    assert!(!truncated.cut && !truncated.body.ends_with(b"\n"), "the body ends inside a record line");
    h.admin(&format!("sessions/{session}/faults"), json!({"redeliver": 2})).await;
    let again = lines(&h.api(Method::POST, &token, "fetch", Some(all_partitions([3, 3], 0))).await.body);
    assert_eq!(again.first().unwrap()["offset"], 1, "offsets already delivered come again");
    h.admin(&format!("sessions/{session}/faults"), json!({"slow_ms": 5})).await;
    let started = Instant::now();
    let slow = lines(&h.api(Method::POST, &token, "fetch", Some(all_partitions([0, 0], 0))).await.body);
    assert_eq!(slow.len(), full.len());
    assert!(started.elapsed() >= Duration::from_millis(5 * full.len() as u64 / 2));
    let _ = &h.cloud;
}
