//! `gateway`: the same work through the WebSocket gateway (served in this
//! process on 127.0.0.1, one client connection each way) beside the library
//! in process. Publish: N events in batches of `--batch` (at most the
//! gateway's 500), one request at a time. Drain: N events published first
//! (not timed), then one client subscribed with a credit of `--concurrency`
//! acking each delivery as it arrives, timed to the last ack answered, beside
//! one in-process subscriber of the same concurrency. Latency: one event per
//! publish request at `--rate` for `--duration`, from the request sent to its
//! delivery read by the subscribed client.

use std::time::Duration;

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::{interval, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::Ctx;
use crate::report::{count, r3, Percentiles, Report};
use crate::work::{drain, pool_size, publish_backlog, stream_with_consumers, SUBJECT};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<Report> {
    let p = ctx.params;
    let mut report = Report::new("gateway");
    let pool = ctx.db.pool(pool_size(p.workers) + 4).await?;
    let key = SigningKey::from_bytes(&rand_seed());
    let public = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());
    stream_with_consumers(&pool, "gw_publish", &[]).await?;
    stream_with_consumers(&pool, "gw_drain", &["gw_drain", "gw_drain_local"]).await?;
    stream_with_consumers(&pool, "gw_latency", &["gw_latency"]).await?;
    let new_key = sluice_gateway::NewKey::new("bench", public)
        .publish("gw_publish")
        .publish("gw_latency")
        .consume("gw_drain", "gw_drain")
        .consume("gw_latency", "gw_latency");
    sluice_gateway::add_key(&pool, new_key).await?;
    let app = sluice_gateway::router(sluice_gateway::GatewayState::new(pool.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}{}", listener.local_addr()?, sluice_gateway::PATH);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // Publish.
    let batch = p.batch.min(500);
    ctx.out.progress(&format!("gateway: publishing {} events in batches of {batch}", p.drain_n));
    let mut client = login(&url, &key).await?;
    let start = Instant::now();
    let mut done = 0u64;
    let mut id = 0u64;
    while done < p.drain_n {
        let k = (batch as u64).min(p.drain_n - done);
        let events: Vec<Value> = (done..done + k).map(|n| json!({"subject": SUBJECT, "payload": {"n": n}})).collect();
        id += 1;
        let answer =
            ask(&mut client, json!({"type": "publish", "id": id, "stream": "gw_publish", "events": events})).await?;
        anyhow::ensure!(answer["type"] == "published", "publish refused: {answer}");
        done += k;
    }
    let gateway_s = start.elapsed().as_secs_f64();
    stream_with_consumers(&pool, "gw_publish_local", &[]).await?;
    let local_s = publish_backlog(&pool, "gw_publish_local", p.drain_n, batch).await?.as_secs_f64();
    let (gw, local) = (p.drain_n as f64 / gateway_s, p.drain_n as f64 / local_s);
    report.line(format!(
        "publish, batches of {batch}: gateway {} events/s ({gateway_s:.3} s), in process {} events/s ({local_s:.3} s)",
        count(gw),
        count(local)
    ));
    report.set(
        "publish",
        json!({ "n": p.drain_n, "batch": batch, "gateway_events_per_s": gw.round(), "gateway_s": r3(gateway_s),
                "in_process_events_per_s": local.round(), "in_process_s": r3(local_s) }),
    );

    // Drain.
    ctx.out.progress(&format!("gateway: draining {} tasks through one client, credit {}", p.drain_n, p.concurrency));
    publish_backlog(&pool, "gw_drain", p.drain_n, p.batch).await?;
    let credit = p.concurrency.min(1000);
    let start = Instant::now();
    let mut consumer = login(&url, &key).await?;
    let subscribe =
        json!({"type": "subscribe", "id": 0, "stream": "gw_drain", "consumer": "gw_drain", "credit": credit});
    consumer.send(Message::text(subscribe.to_string())).await?;
    let mut acked = 0u64;
    let mut id = 0u64;
    while acked < p.drain_n {
        let frame = read(&mut consumer, p.timeout()).await?;
        match frame["type"].as_str() {
            Some("deliver") => {
                id += 1;
                let ack = json!({"type": "ack", "id": id, "lease_token": frame["lease_token"]});
                consumer.send(Message::text(ack.to_string())).await?;
            }
            Some("ok") => acked += 1,
            Some("subscribed") => {}
            _ => anyhow::bail!("unexpected frame while draining: {frame}"),
        }
    }
    let gateway_s = start.elapsed().as_secs_f64();
    drop(consumer);
    let config = p.sub_config();
    let local = drain(&pool, &config, "gw_drain", "gw_drain_local", p.drain_n, 1, p.timeout()).await?;
    let gw = p.drain_n as f64 / gateway_s;
    report.line(format!(
        "drain, one client with credit {credit}: gateway {} tasks/s ({gateway_s:.3} s), one in-process subscriber {} tasks/s ({:.3} s)",
        count(gw),
        count(local.per_s()),
        local.acked_s
    ));
    report.set(
        "drain",
        json!({ "n": p.drain_n, "credit": credit, "gateway_tasks_per_s": gw.round(), "gateway_s": r3(gateway_s),
                "in_process_tasks_per_s": local.per_s().round(), "in_process_s": r3(local.acked_s) }),
    );

    // Latency: publish request sent → delivery read, both through the gateway.
    let total = ((p.rate as f64) * p.duration_s).round().max(1.0) as u64;
    ctx.out.progress(&format!("gateway: latency, {total} events at {}/s", p.rate));
    let mut subscriber = login(&url, &key).await?;
    let subscribe =
        json!({"type": "subscribe", "id": 0, "stream": "gw_latency", "consumer": "gw_latency", "credit": credit});
    let answer = ask(&mut subscriber, subscribe).await?;
    anyhow::ensure!(answer["type"] == "subscribed", "subscribe refused: {answer}");
    // Several publisher connections, as the in-process latency scenario
    // uses several: a connection answers its requests one at a time.
    let publishers = u64::from(p.latency_publishers.max(1));
    let epoch = Instant::now();
    let mut senders = Vec::new();
    for i in 0..publishers {
        let share = total / publishers + u64::from(i < total % publishers);
        let rate = (p.rate as f64 / publishers as f64).max(1.0);
        senders.push(tokio::spawn(publish_steadily(login(&url, &key).await?, epoch, share, rate)));
    }
    let mut latencies = Vec::with_capacity(total as usize);
    let mut id = 0u64;
    let mut acks_pending = 0u64;
    while (latencies.len() as u64) < total || acks_pending > 0 {
        let frame = read(&mut subscriber, p.timeout()).await?;
        match frame["type"].as_str() {
            Some("deliver") => {
                let sent = frame["payload"]["t"].as_u64().unwrap_or(0);
                latencies.push(epoch.elapsed().as_micros() as u64 - sent);
                id += 1;
                acks_pending += 1;
                let ack = json!({"type": "ack", "id": id, "lease_token": frame["lease_token"]});
                subscriber.send(Message::text(ack.to_string())).await?;
            }
            Some("ok") => acks_pending -= 1,
            _ => anyhow::bail!("unexpected frame while measuring latency: {frame}"),
        }
    }
    for sender in senders {
        sender.await??;
    }
    latencies.sort_unstable();
    let at = |q: f64| Percentiles(&latencies).at(q) as f64 / 1000.0;
    report.line(format!(
        "latency at {}/s, publish request → delivery read: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p.rate,
        at(50.0),
        at(90.0),
        at(99.0),
        at(100.0)
    ));
    report.set(
        "latency",
        json!({ "rate": p.rate, "n": total, "p50_ms": at(50.0), "p90_ms": at(90.0), "p99_ms": at(99.0), "max_ms": at(100.0) }),
    );
    server.abort();
    pool.close().await;
    Ok(report)
}

/// One event per request at `rate` a second, each stamped with when its tick fired
/// (µs since `epoch`); answers are read as they come.
async fn publish_steadily(mut socket: Socket, epoch: Instant, total: u64, rate: f64) -> anyhow::Result<()> {
    let mut ticks = interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut answered = 0u64;
    let mut sent = 0u64;
    while answered < total {
        tokio::select! {
            _ = ticks.tick(), if sent < total => {
                sent += 1;
                let t = epoch.elapsed().as_micros() as u64;
                let frame = json!({"type": "publish", "id": sent, "stream": "gw_latency",
                                   "events": [{"subject": SUBJECT, "payload": {"t": t}}]});
                socket.send(Message::text(frame.to_string())).await?;
            }
            frame = read(&mut socket, Duration::from_secs(60)) => {
                let frame = frame?;
                anyhow::ensure!(frame["type"] == "published", "publish refused: {frame}");
                answered += 1;
            }
        }
    }
    Ok(())
}

fn rand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    seed[..16].copy_from_slice(&nanos.to_le_bytes());
    seed
}

/// Connected and logged in with `key`.
async fn login(url: &str, key: &SigningKey) -> anyhow::Result<Socket> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    let challenge = read(&mut socket, Duration::from_secs(10)).await?;
    let nonce: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(challenge["nonce"].as_str().unwrap_or_default())?
        .try_into()
        .map_err(|_| anyhow::anyhow!("a nonce of 32 bytes"))?;
    let public = key.verifying_key().to_bytes();
    let signature = key.sign(&sluice_gateway::signed_message(&nonce, &public)).to_bytes();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let hello =
        json!({"type": "hello", "public_key": b64(&public), "signature": b64(&signature), "client": "sluice-bench"});
    socket.send(Message::text(hello.to_string())).await?;
    let welcome = read(&mut socket, Duration::from_secs(10)).await?;
    anyhow::ensure!(welcome["type"] == "welcome", "login refused: {welcome}");
    Ok(socket)
}

async fn ask(socket: &mut Socket, frame: Value) -> anyhow::Result<Value> {
    socket.send(Message::text(frame.to_string())).await?;
    read(socket, Duration::from_secs(60)).await
}

/// The next JSON frame, pings skipped.
async fn read(socket: &mut Socket, limit: Duration) -> anyhow::Result<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| anyhow::anyhow!("no frame from the gateway within {limit:?}"))?
            .ok_or_else(|| anyhow::anyhow!("the gateway closed the connection"))??;
        match message {
            Message::Text(text) => return Ok(serde_json::from_str(&text)?),
            Message::Close(frame) => anyhow::bail!("the gateway closed the connection: {frame:?}"),
            _ => continue,
        }
    }
}
