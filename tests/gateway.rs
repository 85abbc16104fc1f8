//! The gateway (`sluice_gateway`, protocol `sluice.v1` of docs/GATEWAY.md)
//! as a client in another language sees it: a real WebSocket client
//! (tokio-tungstenite) against the gateway served on a free port, on a real
//! database. Every frame, and every bad input with its error code and
//! whether the connection stays open; nothing stored changes on an error.

use std::time::Duration;

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sluice_gateway::{GatewayState, Limits, NewKey};
use support::TestDb;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A client's key pair, from a seed (tests need no randomness here).
fn signing_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn public_key(key: &SigningKey) -> String {
    b64(&key.verifying_key().to_bytes())
}

/// The gateway on a free port of 127.0.0.1, serving until the test ends.
async fn serve(db: &TestDb, limits: Limits) -> String {
    let app = sluice_gateway::router(GatewayState::with_limits(db.pool.clone(), limits));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("ws://{address}{}", sluice_gateway::PATH)
}

/// A stream `orders` and a key `billing-py` (seed 1) that may publish to it.
async fn seeded(limits: Limits) -> (TestDb, String) {
    let db = TestDb::new().await;
    sluice::create_stream(&db.pool, "orders", sluice::StreamOptions::default()).await.unwrap();
    sluice::create_stream(&db.pool, "audit", sluice::StreamOptions::default()).await.unwrap();
    let key = NewKey::new("billing-py", public_key(&signing_key(1))).publish("orders").publish("ghosts");
    sluice_gateway::add_key(&db.pool, key).await.unwrap();
    let url = serve(&db, limits).await;
    (db, url)
}

/// A connected socket and the challenge's nonce.
async fn connect(url: &str) -> (Socket, [u8; 32]) {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", sluice_gateway::PROTOCOL.parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.expect("connect");
    assert_eq!(response.headers()["sec-websocket-protocol"], sluice_gateway::PROTOCOL);
    let challenge = next(&mut socket).await;
    assert_eq!((challenge["type"].as_str(), challenge["protocol"].as_str()), (Some("challenge"), Some("sluice.v1")));
    let nonce = base64::engine::general_purpose::STANDARD.decode(challenge["nonce"].as_str().unwrap()).unwrap();
    (socket, nonce.try_into().expect("a 32-byte nonce"))
}

/// The hello a client sends: its public key and its signature over the nonce.
fn hello(key: &SigningKey, nonce: &[u8; 32]) -> Value {
    let public = key.verifying_key().to_bytes();
    let signature = key.sign(&sluice_gateway::signed_message(nonce, &public));
    json!({"type": "hello", "public_key": b64(&public), "signature": b64(&signature.to_bytes()), "client": "tests/1"})
}

/// Logged in with `key`: the socket and the welcome.
async fn login(url: &str, key: &SigningKey) -> (Socket, Value) {
    let (mut socket, nonce) = connect(url).await;
    send(&mut socket, hello(key, &nonce)).await;
    let welcome = next(&mut socket).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (socket, welcome)
}

async fn send(socket: &mut Socket, frame: Value) {
    socket.send(Message::text(frame.to_string())).await.expect("send");
}

/// The next JSON frame (pings are skipped), within 20 s in all.
async fn next(socket: &mut Socket) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("a frame within 20 s")
            .expect("the socket is open")
            .expect("a frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The close frame's code, once the server closes (frames before it are
/// skipped), within 20 s in all.
async fn closed_with(socket: &mut Socket) -> u16 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await.expect("closed within 20 s") {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => panic!("closed without a close code"),
            Some(Ok(_)) => continue,
        }
    }
}

/// Sends a request and returns the answer, which must echo its id.
async fn ask(socket: &mut Socket, frame: Value) -> Value {
    let id = frame["id"].clone();
    send(socket, frame).await;
    let answer = next(socket).await;
    assert_eq!(answer["id"], id, "the answer echoes the id: {answer}");
    answer
}

/// An error frame's code, asserting it is one.
fn code(answer: &Value) -> &str {
    assert_eq!(answer["type"], "error", "{answer}");
    assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
    answer["code"].as_str().unwrap()
}

/// Every event stored, as (id, subject): what a bad request must not change.
async fn events(db: &TestDb) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT id, subject FROM sluice.events ORDER BY id").fetch_all(&db.pool).await.unwrap()
}

#[tokio::test]
async fn a_client_logs_in_with_its_key_and_publishes_one_event_or_a_batch() {
    let (db, url) = seeded(Limits::default()).await;
    let (mut socket, welcome) = login(&url, &signing_key(1)).await;
    assert_eq!(welcome["key"], "billing-py");
    assert_eq!(welcome["publish"], json!(["orders", "ghosts"]));
    assert_eq!(welcome["limits"]["max_batch"], 500);
    assert!(uuid::Uuid::parse_str(welcome["connection"].as_str().unwrap()).is_ok(), "{welcome}");

    let one = ask(
        &mut socket,
        json!({"type": "publish", "id": 1, "stream": "orders",
               "events": [{"subject": "orders.eu.created", "payload": {"id": 42}}]}),
    )
    .await;
    assert_eq!(one["type"], "published", "{one}");
    let first = one["events"][0]["id"].as_i64().unwrap();
    assert_eq!(one["events"][0]["duplicate"], false);

    let batch = ask(
        &mut socket,
        json!({"type": "publish", "id": "b-2", "stream": "orders", "events": [
            {"subject": "orders.eu.paid", "payload": [1, 2], "metadata": {"tenant": "eu"}, "key": "customer-7",
             "priority": 4, "deliver_at": "2030-01-01T00:00:00Z"},
            {"subject": "orders.us.paid", "payload": "plain"}
        ]}),
    )
    .await;
    let ids: Vec<i64> = batch["events"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    assert!(first < ids[0] && ids[0] < ids[1], "{ids:?}");
    let stored: (String, Value, Value, Option<String>, i16, bool) = sqlx::query_as(
        "SELECT subject, payload, metadata, key, priority, deliver_at = '2030-01-01T00:00:00Z'
         FROM sluice.events WHERE id = $1",
    )
    .bind(ids[0])
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        ("orders.eu.paid".into(), json!([1, 2]), json!({"tenant": "eu"}), Some("customer-7".into()), 4, true)
    );
    assert_eq!(events(&db).await.len(), 3);

    let pong = ask(&mut socket, json!({"type": "ping", "id": "p"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn a_retried_publish_with_idempotency_keys_is_stored_once() {
    let (db, url) = seeded(Limits::default()).await;
    let (mut socket, _) = login(&url, &signing_key(1)).await;
    let frame = |id: i64| {
        json!({"type": "publish", "id": id, "stream": "orders", "events": [
            {"subject": "orders.eu.created", "payload": 1, "idempotency_key": "order-1"},
            {"subject": "orders.eu.created", "payload": 2}
        ]})
    };
    let first = ask(&mut socket, frame(1)).await;
    let retried = ask(&mut socket, frame(2)).await;
    assert_eq!(first["events"][0]["duplicate"], false);
    assert_eq!(retried["events"][0], json!({"id": first["events"][0]["id"], "duplicate": true}));
    assert_eq!(retried["events"][1]["duplicate"], false, "an event without a key is published again");
    assert_eq!(events(&db).await.len(), 3);

    // The same key from two connections at once: one event, both told its id.
    let (mut other, _) = login(&url, &signing_key(1)).await;
    let same = |id: i64| {
        json!({"type": "publish", "id": id, "stream": "orders",
               "events": [{"subject": "orders.eu.created", "payload": 3, "idempotency_key": "order-3"}]})
    };
    send(&mut socket, same(3)).await;
    send(&mut other, same(4)).await;
    let (a, b) = (next(&mut socket).await, next(&mut other).await);
    assert_eq!(a["events"][0]["id"], b["events"][0]["id"], "{a} {b}");
    let fresh = [&a, &b].iter().filter(|x| x["events"][0]["duplicate"] == false).count();
    assert_eq!(fresh, 1, "{a} {b}");
    assert_eq!(events(&db).await.len(), 4);

    // Keys are per stream: the same key on another stream is another event.
    sluice_gateway::add_key(&db.pool, NewKey::new("auditor", public_key(&signing_key(2))).publish("audit"))
        .await
        .unwrap();
    let (mut auditor, _) = login(&url, &signing_key(2)).await;
    let audit = ask(
        &mut auditor,
        json!({"type": "publish", "id": 5, "stream": "audit",
               "events": [{"subject": "audit.x", "payload": 1, "idempotency_key": "order-1"}]}),
    )
    .await;
    assert_eq!(audit["events"][0]["duplicate"], false, "{audit}");
}

#[tokio::test]
async fn bad_logins_are_refused_with_a_code_and_closed() {
    let (db, url) = seeded(Limits::default().auth_timeout(Duration::from_millis(500))).await;
    let stranger = signing_key(9);
    let member = signing_key(1);

    // A valid signature by a key nobody registered.
    let (mut socket, nonce) = connect(&url).await;
    send(&mut socket, hello(&stranger, &nonce)).await;
    let refused = next(&mut socket).await;
    assert_eq!(code(&refused), "auth_failed");
    assert!(refused["message"].as_str().unwrap().contains("no gateway key is registered"), "{refused}");
    assert_eq!(closed_with(&mut socket).await, 1008);

    // A signature replayed from an earlier connection: made for another nonce.
    let (_, old_nonce) = connect(&url).await;
    let replayed = hello(&member, &old_nonce);
    let (mut socket, _) = connect(&url).await;
    send(&mut socket, replayed).await;
    let refused = next(&mut socket).await;
    assert_eq!(code(&refused), "auth_failed");
    assert!(refused["message"].as_str().unwrap().contains("does not verify"), "{refused}");
    assert_eq!(closed_with(&mut socket).await, 1008);

    // A member's public key with a stranger's signature; malformed signatures and hellos.
    let (mut socket, nonce) = connect(&url).await;
    let mut forged = hello(&stranger, &nonce);
    forged["public_key"] = json!(public_key(&member));
    send(&mut socket, forged).await;
    assert_eq!(code(&next(&mut socket).await), "auth_failed");
    let bad_hellos = [
        json!({"type": "hello", "public_key": public_key(&member), "signature": "%%%"}),
        json!({"type": "hello", "public_key": public_key(&member), "signature": b64(&[0; 12])}),
        json!({"type": "hello", "public_key": b64(&[1; 31]), "signature": b64(&[0; 64])}),
        json!({"type": "hello", "public_key": public_key(&member)}),
        json!({"type": "hello", "public_key": public_key(&member), "signature": b64(&[0; 64]), "token": "x"}),
    ];
    for bad in bad_hellos {
        let (mut socket, _) = connect(&url).await;
        send(&mut socket, bad.clone()).await;
        assert_eq!(code(&next(&mut socket).await), "auth_failed", "{bad}");
        assert_eq!(closed_with(&mut socket).await, 1008, "{bad}");
    }

    // A request before logging in, and no hello at all.
    let (mut socket, _) = connect(&url).await;
    send(&mut socket, json!({"type": "publish", "id": 1, "stream": "orders", "events": []})).await;
    let refused = next(&mut socket).await;
    assert_eq!((code(&refused), &refused["id"]), ("not_authenticated", &json!(1)));
    assert_eq!(closed_with(&mut socket).await, 1008);
    let (mut socket, _) = connect(&url).await;
    assert_eq!(code(&next(&mut socket).await), "auth_timeout");
    assert_eq!(closed_with(&mut socket).await, 1008);

    // A revoked key.
    sluice_gateway::revoke_key(&db.pool, "billing-py").await.unwrap();
    let (mut socket, nonce) = connect(&url).await;
    send(&mut socket, hello(&member, &nonce)).await;
    let refused = next(&mut socket).await;
    assert_eq!(code(&refused), "auth_failed");
    assert!(refused["message"].as_str().unwrap().contains("revoked"), "{refused}");
    assert!(events(&db).await.is_empty(), "nothing stored");
}

#[tokio::test]
async fn bad_requests_get_typed_errors_the_connection_stays_and_nothing_is_stored() {
    let limits = Limits::default().max_batch(3).max_frame_bytes(4096);
    let (db, url) = seeded(limits).await;
    let (mut socket, _) = login(&url, &signing_key(1)).await;
    let event = json!({"subject": "orders.eu.created", "payload": 1});
    let publish = |events: Value| json!({"type": "publish", "id": 9, "stream": "orders", "events": events});
    let with = |field: &str, value: Value| {
        let mut e = event.clone();
        e[field] = value;
        publish(json!([e]))
    };
    let cases = [
        (json!({"type": "publish", "id": 1, "stream": "audit", "events": [event]}), "forbidden"),
        (json!({"type": "publish", "id": 1, "stream": "ghosts", "events": [event]}), "not_found"),
        (json!({"type": "publish", "id": 1, "stream": "no way", "events": [event]}), "invalid"),
        (publish(json!([])), "invalid"),
        (publish(json!([event, event, event, event])), "batch_too_large"),
        (with("subject", json!("orders..bad")), "invalid"),
        (with("priority", json!(9)), "invalid"),
        (with("deliver_at", json!("next tuesday")), "invalid"),
        (with("idempotency_key", json!("")), "invalid"),
        (with("idempotency_key", json!("k".repeat(201))), "invalid"),
        (
            publish(json!([{"subject": "a.b", "payload": 1, "idempotency_key": "k"},
                           {"subject": "a.b", "payload": 2, "idempotency_key": "k"}])),
            "invalid",
        ),
        (with("metadata", json!({"n": 1})), "malformed"),
        (with("colour", json!("red")), "malformed"),
        (json!({"type": "publish", "id": 1, "events": [event]}), "malformed"),
        (json!({"type": "publish", "stream": "orders", "events": [event]}), "malformed"),
        (json!({"type": "teleport", "id": 1}), "unknown_type"),
        (json!({"type": "subscribe", "id": 1, "stream": "orders", "consumer": "c", "credit": 1}), "forbidden"),
        (json!({"type": "hello", "id": 1}), "invalid"),
        (json!({"id": 1}), "malformed"),
    ];
    for (frame, expected) in cases {
        send(&mut socket, frame.clone()).await;
        let answer = next(&mut socket).await;
        assert_eq!(code(&answer), expected, "{frame}: {answer}");
    }
    socket.send(Message::text("{not json")).await.unwrap();
    assert_eq!(code(&next(&mut socket).await), "malformed");
    socket.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(code(&next(&mut socket).await), "malformed");
    // Still open after all that: the connection survives requests it refuses.
    assert_eq!(ask(&mut socket, json!({"type": "ping", "id": 2})).await["type"], "pong");
    assert!(events(&db).await.is_empty(), "nothing stored");

    // A frame over the limit ends the connection, with code 1009.
    let big = with("payload", json!("x".repeat(5000)));
    send(&mut socket, big).await;
    assert_eq!(code(&next(&mut socket).await), "frame_too_large");
    assert_eq!(closed_with(&mut socket).await, 1009);
    // Far over it (past what the WebSocket layer reads at all): the
    // connection ends; the error frame may be lost to the reset of a socket
    // closed with unread data, as docs/GATEWAY.md says.
    let (mut socket, _) = login(&url, &signing_key(1)).await;
    let _ = socket.send(Message::text(with("payload", json!("x".repeat(200_000))).to_string())).await;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), socket.next()).await.expect("ends within 20 s") {
            Some(Ok(Message::Text(text))) => assert!(text.contains("frame_too_large"), "{text}"),
            Some(Ok(Message::Close(frame))) => {
                assert!(frame.as_ref().is_none_or(|f| u16::from(f.code) == 1009), "{frame:?}");
                break;
            }
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => break,
        }
    }
    assert!(events(&db).await.is_empty(), "nothing stored");
}

#[tokio::test]
async fn a_key_has_at_most_its_connections_and_revoking_it_closes_them() {
    let (db, url) = seeded(Limits::default().max_connections_per_key(2)).await;
    let member = signing_key(1);
    let (mut first, _) = login(&url, &member).await;
    let (second, _) = login(&url, &member).await;
    let (mut third, nonce) = connect(&url).await;
    send(&mut third, hello(&member, &nonce)).await;
    assert_eq!(code(&next(&mut third).await), "too_many_connections");
    assert_eq!(closed_with(&mut third).await, 1008);
    // One closes: its slot is free again.
    drop(second);
    support::wait_until(Duration::from_secs(10), "a slot freed", || async {
        let (mut socket, nonce) = connect(&url).await;
        send(&mut socket, hello(&member, &nonce)).await;
        next(&mut socket).await["type"] == "welcome"
    })
    .await;

    sluice_gateway::revoke_key(&db.pool, "billing-py").await.unwrap();
    let refused = tokio::time::timeout(sluice_gateway::REVOCATION_CHECK * 3, next(&mut first)).await.unwrap();
    assert_eq!(code(&refused), "revoked");
    assert_eq!(closed_with(&mut first).await, 1008);
}

#[tokio::test]
async fn keys_are_checked_when_added_and_revoked_once() {
    let db = TestDb::new().await;
    let key = public_key(&signing_key(1));
    let added =
        sluice_gateway::add_key(&db.pool, NewKey::new("a", &key).publish("orders").consume("orders", "billing"))
            .await
            .unwrap();
    assert_eq!((added.publish.clone(), added.consume.clone()), (vec!["orders".into()], vec!["orders/billing".into()]));
    assert_eq!(added.public_key, key);
    let bad = [
        (NewKey::new("no way", &key), "invalid name"),
        (NewKey::new("b", "!!"), "is not base64"),
        (NewKey::new("b", b64(&[1; 16])), "32 bytes, this one is 16"),
        (NewKey::new("b", public_key(&signing_key(2))).publish("a b"), "invalid --publish"),
        (NewKey::new("b", public_key(&signing_key(2))).consume("orders", ""), "invalid --consume"),
        (NewKey::new("a", public_key(&signing_key(2))), "gateway key \"a\" exists already"),
        (NewKey::new("b", &key), "registered already, as gateway key \"a\""),
    ];
    for (new, says) in bad {
        let e = sluice_gateway::add_key(&db.pool, new).await.unwrap_err();
        assert!(e.to_string().contains(says), "{e} should say {says:?}");
    }
    assert_eq!(sluice_gateway::list_keys(&db.pool).await.unwrap(), std::slice::from_ref(&added), "nothing else stored");
    let revoked = sluice_gateway::revoke_key(&db.pool, "a").await.unwrap();
    assert!(revoked.revoked_at.is_some());
    let twice = sluice_gateway::revoke_key(&db.pool, "a").await.unwrap_err();
    assert!(twice.to_string().contains("revoked already"), "{twice}");
    let unknown = sluice_gateway::revoke_key(&db.pool, "zz").await.unwrap_err();
    assert!(unknown.to_string().contains("gateway key \"zz\" does not exist"), "{unknown}");
}

/// A stream `orders` with consumer `billing` (quick retries, a long lease)
/// and a key (seed 1) that may take tasks from it, with `events` published.
async fn taking(limits: Limits, events: usize) -> (TestDb, String, Vec<sluice::EventId>) {
    let db = TestDb::new().await;
    sluice::create_stream(&db.pool, "orders", sluice::StreamOptions::default()).await.unwrap();
    let options = sluice::ConsumerOptions::default()
        .backoff(Duration::from_millis(10), Duration::from_millis(10))
        .lease(Duration::from_secs(120))
        .max_attempts(5);
    sluice::create_consumer(&db.pool, "orders", "billing", options).await.unwrap();
    let key =
        NewKey::new("billing-py", public_key(&signing_key(1))).consume("orders", "billing").consume("orders", "ghost");
    sluice_gateway::add_key(&db.pool, key).await.unwrap();
    let batch = (0..events).map(|n| sluice::NewEvent::new("orders.eu.created", &json!({"n": n})).unwrap());
    let ids = sluice::publish_batch(&db.pool, "orders", batch).await.unwrap();
    let url = serve(&db, limits).await;
    (db, url, ids)
}

/// A logged-in client that keeps the frames the server pushes (`deliver`,
/// `expired`) apart from the answers to its requests.
struct Client {
    socket: Socket,
    pushed: std::collections::VecDeque<Value>,
}

impl Client {
    async fn login(url: &str, key: &SigningKey) -> Client {
        Client { socket: login(url, key).await.0, pushed: Default::default() }
    }

    /// Sends a request and returns its answer, keeping pushed frames for later.
    async fn ask(&mut self, frame: Value) -> Value {
        let id = frame["id"].clone();
        send(&mut self.socket, frame).await;
        loop {
            let answer = next(&mut self.socket).await;
            if answer["type"] == "deliver" || answer["type"] == "expired" {
                self.pushed.push_back(answer);
                continue;
            }
            assert_eq!(answer["id"], id, "the answer echoes the id: {answer}");
            return answer;
        }
    }

    /// The next pushed frame of this type.
    async fn pushed(&mut self, kind: &str) -> Value {
        if let Some(i) = self.pushed.iter().position(|f| f["type"] == kind) {
            return self.pushed.remove(i).unwrap();
        }
        loop {
            let frame = next(&mut self.socket).await;
            if frame["type"] == kind {
                return frame;
            }
            assert!(frame["type"] == "deliver" || frame["type"] == "expired", "pushed frames only: {frame}");
            self.pushed.push_back(frame);
        }
    }

    async fn delivery(&mut self) -> Value {
        self.pushed("deliver").await
    }
}

/// Tasks by state, as the database has them.
async fn states(db: &TestDb) -> Vec<(String, i64)> {
    support::task_states(&db.pool, "billing").await
}

#[tokio::test]
async fn a_client_takes_tasks_within_its_credit_and_settles_them_by_lease_token() {
    let (db, url, ids) = taking(Limits::default(), 5).await;
    let mut client = Client::login(&url, &signing_key(1)).await;
    let subscribed =
        client.ask(json!({"type": "subscribe", "id": 1, "stream": "orders", "consumer": "billing", "credit": 2})).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    let s = subscribed["subscription"].clone();
    let (a, b) = (client.delivery().await, client.delivery().await);
    assert_eq!(
        (a["subscription"].clone(), a["stream"].as_str(), a["consumer"].as_str()),
        (s.clone(), Some("orders"), Some("billing"))
    );
    assert_eq!(a["event_id"], ids[0].0, "in order: {a}");
    assert_eq!(
        (a["attempt"].as_i64(), a["subject"].as_str(), a["payload"].clone()),
        (Some(1), Some("orders.eu.created"), json!({"n": 0}))
    );
    assert!(a["lease_token"].as_str().is_some_and(|t| t.parse::<i64>().is_ok()), "{a}");
    // The credit is used up: two held, the rest wait (as tasks or still as events).
    let running = states(&db).await.into_iter().find(|(s, _)| s == "running").map(|(_, n)| n);
    assert_eq!(running, Some(2));

    let acked = client.ask(json!({"type": "ack", "id": 2, "lease_token": a["lease_token"]})).await;
    assert_eq!(acked["type"], "ok", "{acked}");
    let c = client.delivery().await;
    let nacked = client.ask(
        json!({"type": "nack", "id": 3, "lease_token": b["lease_token"], "action": "requeue_end", "reason": "later"}),
    )
    .await;
    assert_eq!((nacked["type"].as_str(), nacked["state"].as_str()), (Some("ok"), Some("available")), "{nacked}");
    let d = client.delivery().await;
    let deferred = client.ask(
        json!({"type": "defer", "id": 4, "lease_token": c["lease_token"], "delay_ms": 3_600_000, "priority": 5, "reason": "tomorrow"}),
    )
    .await;
    assert!(deferred["due"].as_str().is_some(), "{deferred}");
    let extended = client.ask(json!({"type": "extend", "id": 5, "lease_token": d["lease_token"]})).await;
    assert_eq!(extended["type"], "ok", "{extended}");
    let more = client.ask(json!({"type": "credit", "id": 6, "subscription": s, "add": 3})).await;
    assert_eq!(more["credit"], 5, "{more}");
    // Settle everything else as it comes: the requeued one comes back too.
    let mut open = vec![d];
    let mut acks = 0;
    while let Some(task) = open.pop() {
        let done = client.ask(json!({"type": "ack", "id": 100 + acks, "lease_token": task["lease_token"]})).await;
        assert_eq!(done["type"], "ok", "{done}");
        acks += 1;
        if acks < 3 {
            open.push(client.delivery().await);
        }
    }
    support::wait_until(Duration::from_secs(10), "all but the deferred task done", || async {
        states(&db).await == [("scheduled".to_string(), 1)]
    })
    .await;
    let log = sluice::task_log(&db.pool, "orders", "billing", ids[2]).await.unwrap();
    assert!(log.iter().any(|e| e.action == "deferred" && e.reason.as_deref() == Some("tomorrow")), "{log:?}");
}

#[tokio::test]
async fn a_gone_clients_tasks_are_released_at_once_and_go_to_the_next_client() {
    let (db, url, _) = taking(Limits::default(), 3).await;
    let mut client = Client::login(&url, &signing_key(1)).await;
    client.ask(json!({"type": "subscribe", "id": 1, "stream": "orders", "consumer": "billing", "credit": 3})).await;
    for _ in 0..3 {
        client.delivery().await;
    }
    drop(client);
    // Well before the 120 s lease: released, not failed.
    support::wait_until(Duration::from_secs(15), "the tasks back at once", || async {
        states(&db).await == [("available".to_string(), 3)]
    })
    .await;
    let released: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sluice.task_log WHERE action = 'released' AND reason = 'the gateway client disconnected'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(released, 3);
    let mut next_client = Client::login(&url, &signing_key(1)).await;
    next_client
        .ask(json!({"type": "subscribe", "id": 1, "stream": "orders", "consumer": "billing", "credit": 3}))
        .await;
    let again = next_client.delivery().await;
    assert_eq!(again["attempt"], 2, "the released attempt counts, as a shutdown's does: {again}");
}

#[tokio::test]
async fn an_unsettled_task_expires_unless_extended_and_its_old_token_is_refused() {
    let limits = Limits::default().settle_timeout(Duration::from_millis(1500));
    let (db, url, _) = taking(limits, 2).await;
    let mut client = Client::login(&url, &signing_key(1)).await;
    client.ask(json!({"type": "subscribe", "id": 1, "stream": "orders", "consumer": "billing", "credit": 2})).await;
    let (first, second) = (client.delivery().await, client.delivery().await);
    // Keep the second alive past the timeout; let the first expire.
    let keep = tokio::time::Instant::now() + Duration::from_millis(2500);
    let mut n = 10;
    while tokio::time::Instant::now() < keep {
        let extended = client.ask(json!({"type": "extend", "id": n, "lease_token": second["lease_token"]})).await;
        assert_eq!(extended["type"], "ok", "{extended}");
        n += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let expired = client.pushed("expired").await;
    assert_eq!(expired["lease_token"], first["lease_token"], "{expired}");
    // The expired attempt failed and comes back as attempt 2; the old token settles nothing.
    let retry = client.delivery().await;
    assert_eq!((retry["event_id"].clone(), retry["attempt"].as_i64()), (first["event_id"].clone(), Some(2)), "{retry}");
    let stale = client.ask(json!({"type": "ack", "id": 1, "lease_token": first["lease_token"]})).await;
    assert_eq!(code(&stale), "lease_lost");
    for task in [&second, &retry] {
        assert_eq!(client.ask(json!({"type": "ack", "id": 2, "lease_token": task["lease_token"]})).await["type"], "ok");
    }
    let task =
        sluice::get_task(&db.pool, "orders", "billing", sluice::EventId(first["event_id"].as_i64().unwrap())).await;
    assert!(matches!(task, Err(sluice::Error::TaskNotFound { .. })), "completed and removed: {task:?}");
}

#[tokio::test]
async fn bad_subscribes_and_settles_get_typed_errors_and_change_nothing() {
    let (db, url, _) = taking(Limits::default().max_credit(10), 1).await;
    let mut client = Client::login(&url, &signing_key(1)).await;
    let subscribe = |consumer: &str, credit: i64| json!({"type": "subscribe", "id": 1, "stream": "orders", "consumer": consumer, "credit": credit});
    for (frame, expected) in [
        (subscribe("audit", 1), "forbidden"),
        (subscribe("ghost", 1), "not_found"),
        (subscribe("billing", 0), "invalid"),
        (subscribe("billing", 11), "credit_exceeded"),
        (subscribe("billing", -1), "malformed"),
    ] {
        assert_eq!(code(&client.ask(frame.clone()).await), expected, "{frame}");
    }
    let s = client.ask(subscribe("billing", 1)).await["subscription"].clone();
    assert_eq!(code(&client.ask(subscribe("billing", 1)).await), "invalid", "subscribed already");
    let task = client.delivery().await;
    let token = task["lease_token"].clone();
    let before = states(&db).await;
    for (frame, expected) in [
        (json!({"type": "credit", "id": 2, "subscription": s, "add": 10}), "credit_exceeded"),
        (json!({"type": "credit", "id": 2, "subscription": "s99", "add": 1}), "not_found"),
        (json!({"type": "ack", "id": 3, "lease_token": "12345678"}), "lease_lost"),
        (json!({"type": "ack", "id": 3, "lease_token": "abc"}), "malformed"),
        (json!({"type": "nack", "id": 4, "lease_token": token, "action": "explode"}), "invalid"),
        (json!({"type": "defer", "id": 5, "lease_token": token}), "invalid"),
        (
            json!({"type": "defer", "id": 5, "lease_token": token, "delay_ms": 1, "until": "2030-01-01T00:00:00Z"}),
            "invalid",
        ),
        (json!({"type": "defer", "id": 5, "lease_token": token, "delay_ms": 1, "priority": 7}), "invalid"),
        (json!({"type": "defer", "id": 5, "lease_token": token, "until": "2001-01-01T00:00:00Z"}), "invalid"),
        (json!({"type": "extend", "id": 6, "lease_token": "999999"}), "lease_lost"),
    ] {
        assert_eq!(code(&client.ask(frame.clone()).await), expected, "{frame}");
    }
    assert_eq!(states(&db).await, before, "nothing changed");
    // The task is still the client's: refused settles left it held.
    assert_eq!(client.ask(json!({"type": "ack", "id": 7, "lease_token": token})).await["type"], "ok");
    assert_eq!(code(&client.ask(json!({"type": "ack", "id": 8, "lease_token": token})).await), "lease_lost");
}

/// This test's clients, as `sluice workers list` and the dashboard read them.
async fn clients(db: &TestDb) -> Vec<sluice::GatewayClient> {
    sluice::list_gateway_clients(&db.pool).await.unwrap()
}

/// A client is idle once logged in, active with credit open or tasks in its
/// hands, and disconnected once its socket closes; the dashboard's workers
/// page lists it.
#[tokio::test]
async fn a_clients_status_is_idle_active_then_disconnected() {
    let (db, url, _) = taking(Limits::default(), 1).await;
    let mut client = Client::login(&url, &signing_key(1)).await;
    let listed = clients(&db).await;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].key_name.as_str(), listed[0].client.as_deref()), ("billing-py", Some("tests/1")));
    assert_eq!(listed[0].status, "idle");
    assert_eq!(listed[0].pid, std::process::id() as i32, "served by this process");

    client.ask(json!({"type": "subscribe", "id": 1, "stream": "orders", "consumer": "billing", "credit": 3})).await;
    client.delivery().await;
    support::wait_until(Duration::from_secs(20), "active with a task in hand", || async {
        let c = &clients(&db).await[0];
        c.status == "active" && (c.subscriptions, c.credit, c.in_flight) == (1, 3, 1)
    })
    .await;
    let page = {
        use tower::ServiceExt as _;
        let app = sluice_web::router(sluice_web::WebState::new(db.pool.clone()));
        let request = axum::http::Request::get("/workers").body(axum::body::Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    assert!(page.contains("<td>billing-py</td><td>tests/1</td>"), "{page}");
    assert!(page.contains(r#"<span class="badge active">active</span>"#), "{page}");

    drop(client);
    support::wait_until(Duration::from_secs(20), "disconnected", || async {
        let c = &clients(&db).await[0];
        c.status == "disconnected" && c.disconnected_at.is_some() && c.in_flight == 0
    })
    .await;
}

/// Issue 23, defect 5: a client with free credit waits on a consumer while
/// another client holding its tasks goes away; each release wakes it, and
/// every released task comes to it, however the releases and its fetches
/// interleave (it once got 9 of 10 in about one round in six: the last
/// waited for two settles, since a subscriber with a credit tops up only
/// once a quarter of it is free).
#[tokio::test]
async fn every_task_a_gone_client_held_goes_to_a_waiting_client_with_room() {
    const TASKS: usize = 10;
    const ROUNDS: usize = 24;
    let (db, url, _) = taking(Limits::default(), 0).await;
    let subscribe = json!({"type": "subscribe", "id": 1, "stream": "orders", "consumer": "billing", "credit": TASKS});
    for round in 0..ROUNDS {
        let batch = (0..TASKS).map(|n| sluice::NewEvent::new("orders.eu.created", &json!({"n": n})).unwrap());
        sluice::publish_batch(&db.pool, "orders", batch).await.unwrap();
        let mut holder = Client::login(&url, &signing_key(1)).await;
        holder.ask(subscribe.clone()).await;
        for _ in 0..TASKS {
            holder.delivery().await;
        }
        let mut waiting = Client::login(&url, &signing_key(1)).await;
        waiting.ask(subscribe.clone()).await;
        drop(holder);
        let mut got = Vec::new();
        for _ in 0..TASKS {
            let task = tokio::time::timeout(Duration::from_secs(10), waiting.delivery()).await.unwrap_or_else(|_| {
                panic!("round {round}: {} of {TASKS} released tasks delivered to the waiting client", got.len())
            });
            got.push(task);
        }
        for (n, task) in got.iter().enumerate() {
            let acked = waiting.ask(json!({"type": "ack", "id": 10 + n, "lease_token": task["lease_token"]})).await;
            assert_eq!(acked["type"], "ok", "{acked}");
        }
        support::wait_until(Duration::from_secs(10), "the round's tasks done", || async {
            states(&db).await.is_empty()
        })
        .await;
    }
}

/// Issue 23, defect 4: a gone client's task whose release cannot be written
/// (here a trigger refuses `running → available`) is never acked: it stays
/// running under its lease, then the rescuer brings it back and the next
/// client gets it, its attempt counted.
#[tokio::test]
async fn a_task_whose_release_fails_is_never_completed_and_comes_back_after_its_lease() {
    let db = TestDb::new().await;
    sluice::create_stream(&db.pool, "orders", sluice::StreamOptions::default()).await.unwrap();
    let options = sluice::ConsumerOptions::default().lease(Duration::from_secs(3)).max_attempts(5);
    sluice::create_consumer(&db.pool, "orders", "billing", options).await.unwrap();
    sluice_gateway::add_key(
        &db.pool,
        NewKey::new("billing-py", public_key(&signing_key(1))).consume("orders", "billing"),
    )
    .await
    .unwrap();
    let event = sluice::publish(&db.pool, "orders", sluice::NewEvent::new("orders.eu.created", &json!(1)).unwrap())
        .await
        .unwrap();
    let url = serve(&db, Limits::default()).await;
    let subscribe = json!({"type": "subscribe", "id": 1, "stream": "orders", "consumer": "billing", "credit": 1});

    let mut client = Client::login(&url, &signing_key(1)).await;
    client.ask(subscribe.clone()).await;
    let first = client.delivery().await;
    assert_eq!(first["event_id"], event.0);
    let running_to_available = "OLD.state = 'running' AND NEW.state = 'available'";
    support::inject_fault(&db.pool, "refuse_release", "UPDATE ON sluice.tasks", Some(running_to_available)).await;
    drop(client);
    support::wait_until(Duration::from_secs(20), "the client's subscription stopped", || async {
        clients(&db).await[0].status == "disconnected"
    })
    .await;
    // Not completed (nor failed): still running under the gone client's lease.
    assert_eq!(states(&db).await, [("running".to_string(), 1)]);
    let log = sluice::task_log(&db.pool, "orders", "billing", event).await.unwrap();
    assert!(log.is_empty(), "nothing happened to the task: {log:?}");

    support::remove_fault(&db.pool, "refuse_release", "sluice.tasks").await;
    let mut next_client = Client::login(&url, &signing_key(1)).await;
    next_client.ask(subscribe).await;
    let again = next_client.delivery().await;
    assert_eq!((again["event_id"].clone(), again["attempt"].as_i64()), (first["event_id"].clone(), Some(2)), "{again}");
    let log = sluice::task_log(&db.pool, "orders", "billing", event).await.unwrap();
    assert!(log.iter().any(|e| e.action == "lease_expired"), "brought back by the rescuer: {log:?}");
    let acked = next_client.ask(json!({"type": "ack", "id": 2, "lease_token": again["lease_token"]})).await;
    assert_eq!(acked["type"], "ok", "{acked}");
}

/// Issue 23, defect 10: idempotency keys are the publishing gateway key's
/// own. Another client's key using the same idempotency key on the same
/// stream publishes its own event, not a "duplicate" of one it never sent;
/// each key's retry is still answered with its own event.
#[tokio::test]
async fn idempotency_keys_of_one_gateway_key_never_swallow_another_keys_events() {
    let (db, url) = seeded(Limits::default()).await;
    sluice_gateway::add_key(&db.pool, NewKey::new("shipping-py", public_key(&signing_key(2))).publish("orders"))
        .await
        .unwrap();
    let (mut billing, _) = login(&url, &signing_key(1)).await;
    let (mut shipping, _) = login(&url, &signing_key(2)).await;
    let frame = |id: i64, payload: &str| {
        json!({"type": "publish", "id": id, "stream": "orders",
               "events": [{"subject": "orders.eu.created", "payload": payload, "idempotency_key": "order-1"}]})
    };
    let billed = ask(&mut billing, frame(1, "billing's")).await;
    let shipped = ask(&mut shipping, frame(2, "shipping's")).await;
    assert_eq!(billed["events"][0]["duplicate"], false, "{billed}");
    assert_eq!(shipped["events"][0]["duplicate"], false, "another key's event is stored: {shipped}");
    assert_ne!(billed["events"][0]["id"], shipped["events"][0]["id"]);
    let stored: Vec<Value> =
        sqlx::query_scalar("SELECT payload FROM sluice.events ORDER BY id").fetch_all(&db.pool).await.unwrap();
    assert_eq!(stored, [json!("billing's"), json!("shipping's")]);
    // Each key's retry gets its own event back.
    let again = ask(&mut shipping, frame(3, "shipping's")).await;
    assert_eq!(again["events"][0], json!({"id": shipped["events"][0]["id"], "duplicate": true}));
    let again = ask(&mut billing, frame(4, "billing's")).await;
    assert_eq!(again["events"][0], json!({"id": billed["events"][0]["id"], "duplicate": true}));
    assert_eq!(events(&db).await.len(), 2);

    // A key recorded before migration 0015 (of no known gateway key) still
    // answers a retry, by whichever key, until it is forgotten.
    let old = events(&db).await[0].0;
    sqlx::query(
        "INSERT INTO sluice.gateway_publishes (stream_id, key_id, idempotency_key, event_id)
         SELECT id, 0, 'order-0', $1 FROM sluice.streams WHERE name = 'orders'",
    )
    .bind(old)
    .execute(&db.pool)
    .await
    .unwrap();
    let retried = ask(
        &mut shipping,
        json!({"type": "publish", "id": 5, "stream": "orders",
               "events": [{"subject": "orders.eu.created", "payload": 0, "idempotency_key": "order-0"}]}),
    )
    .await;
    assert_eq!(retried["events"][0], json!({"id": old, "duplicate": true}), "{retried}");
    assert_eq!(events(&db).await.len(), 2);
}

/// Issue 23, defect 10: the revocation check fails closed. When the
/// database cannot say whether the key may still be used (here a trigger
/// makes the connection's beat fail), the connection is closed (1011, the
/// server's error) instead of staying open on a key that may be revoked.
#[tokio::test]
async fn a_connection_whose_key_cannot_be_checked_is_closed() {
    let (db, url) = seeded(Limits::default()).await;
    let (mut socket, _) = login(&url, &signing_key(1)).await;
    support::inject_fault(&db.pool, "refuse_beat", "UPDATE ON sluice.gateway_clients", None).await;
    let closed = tokio::time::timeout(sluice_gateway::REVOCATION_CHECK * 3, closed_with(&mut socket))
        .await
        .expect("closed within three revocation checks");
    assert_eq!(closed, 1011);
    // Another connection logs in as usual: only the check failed.
    support::remove_fault(&db.pool, "refuse_beat", "sluice.gateway_clients").await;
    let (mut again, _) = login(&url, &signing_key(1)).await;
    assert_eq!(ask(&mut again, json!({"type": "ping", "id": 1})).await["type"], "pong");
}

/// Issue 23, defect 10: connections that have not logged in are capped
/// (`max_unauthenticated`): past the cap an upgrade is refused with HTTP
/// 503, and a connection that logs in (or goes) gives its place back.
#[tokio::test]
async fn connections_not_logged_in_are_capped() {
    let (_db, url) = seeded(Limits::default().max_unauthenticated(2)).await;
    let (first, nonce) = connect(&url).await;
    let (_second, _) = connect(&url).await;
    let refused = tokio_tungstenite::connect_async(url.as_str()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("max_unauthenticated"), "{body}");
        }
        other => panic!("expected HTTP 503 past max_unauthenticated, got {:?}", other.map(|(_, r)| r.status())),
    }
    // Logged in: its place is free for another, and it works as usual.
    let mut first = first;
    send(&mut first, hello(&signing_key(1), &nonce)).await;
    assert_eq!(next(&mut first).await["type"], "welcome");
    let (_third, _) = connect(&url).await;
    assert_eq!(ask(&mut first, json!({"type": "ping", "id": 1})).await["type"], "pong");
    // One that goes without logging in gives its place back too.
    drop(_second);
    support::wait_until(Duration::from_secs(10), "a place given back", || async {
        tokio_tungstenite::connect_async(url.as_str()).await.is_ok()
    })
    .await;
}

/// Issue 23, defect 10: many subscriptions of one key to one consumer do
/// not take the gateway's pool. While an operator's transaction holds the
/// consumer's row, every refill waits (up to its 2 s lock_timeout) holding
/// a connection; the subscriptions' fetches take turns, so at most half the
/// pool waits so, and the connections' beats keep landing.
#[tokio::test]
async fn many_subscriptions_to_one_consumer_leave_the_pool_to_heartbeats() {
    const POOL: u32 = 4;
    const SUBSCRIPTIONS: usize = 12;
    let (db, _, _) = taking(Limits::default(), 0).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(POOL)
        .connect_with(db.options().await.application_name("gateway-under-test"))
        .await
        .unwrap();
    let app = sluice_gateway::router(GatewayState::with_limits(pool.clone(), Limits::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}{}", listener.local_addr().unwrap(), sluice_gateway::PATH);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut clients = Vec::new();
    for _ in 0..SUBSCRIPTIONS {
        let mut client = Client::login(&url, &signing_key(1)).await;
        let subscribed = client
            .ask(json!({"type": "subscribe", "id": 1, "stream": "orders", "consumer": "billing", "credit": 5}))
            .await;
        assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
        clients.push(client);
    }
    let mut operator = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM sluice.consumers WHERE name = 'billing' FOR NO KEY UPDATE")
        .execute(&mut *operator)
        .await
        .unwrap();
    let held_since = chrono::Utc::now();
    // Two beats of every connection (every 5 s) while the row is held.
    let until = tokio::time::Instant::now() + sluice_gateway::REVOCATION_CHECK * 3;
    let mut most = 0;
    while tokio::time::Instant::now() < until {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = 'gateway-under-test' AND wait_event_type = 'Lock'
               AND query LIKE '%fetch_v2%'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        most = most.max(waiting);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let unbeaten: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sluice.gateway_clients WHERE disconnected_at IS NULL AND seen_at < $1",
    )
    .bind(held_since + chrono::Duration::seconds(1))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    operator.rollback().await.unwrap();
    assert!(most >= 1, "the refills did wait for the row");
    assert!(most <= i64::from(POOL / 2), "{most} of {POOL} connections waited on refills at once");
    assert_eq!(unbeaten, 0, "every connection beat while the refills waited");
}
