//! One client's connection: the challenge, the login, then requests
//! answered in order until the socket closes, the client falls silent or
//! its key is revoked.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::time::{interval, timeout, Instant, MissedTickBehavior};
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::auth;
use crate::keys::{self, LoginKey};
use crate::protocol::{self, Code, Hello, Ping, Publish, Refusal, ServerFrame, PROTOCOL, RESERVED};
use crate::{sql, GatewayState};

/// How often the server pings a client, and how long a client may stay
/// silent (no frame, no pong) before it is taken for gone.
pub const PING_EVERY: Duration = Duration::from_secs(15);
/// See [`PING_EVERY`].
pub const SILENCE_LIMIT: Duration = Duration::from_secs(45);

/// How often an open connection checks that its key is not revoked.
pub const REVOCATION_CHECK: Duration = Duration::from_secs(5);

enum Ended {
    /// The client closed, or the socket broke.
    Gone,
    /// The server refused something that ends the connection.
    Refused(Option<protocol::RequestId>, Refusal),
}

pub(crate) async fn serve(state: GatewayState, mut socket: WebSocket) {
    let nonce = auth::nonce();
    let challenge = ServerFrame::Challenge { protocol: PROTOCOL, nonce: auth::encode(&nonce) };
    if send(&mut socket, &challenge).await.is_err() {
        return;
    }
    let key = match timeout(state.limits().auth_timeout, login(&state, &mut socket, &nonce)).await {
        Ok(Ok(key)) => key,
        Ok(Err(Ended::Gone)) => return,
        Ok(Err(Ended::Refused(id, refusal))) => return refuse(&mut socket, id, refusal).await,
        Err(_) => {
            let limit = state.limits().auth_timeout;
            let refusal = Refusal::new(Code::AuthTimeout, format!("no hello within {limit:?} of the challenge"));
            return refuse(&mut socket, None, refusal).await;
        }
    };
    let Some(_slot) = state.connect(key.id) else {
        let limit = state.limits().max_connections_per_key;
        let refusal = Refusal::new(
            Code::TooManyConnections,
            format!("key {:?} has {limit} connections to this server already (max_connections_per_key)", key.name),
        );
        return refuse(&mut socket, None, refusal).await;
    };
    let connection = Uuid::new_v4();
    let limits = state.limits();
    let welcome = ServerFrame::Welcome {
        key: key.name.clone(),
        connection: connection.to_string(),
        publish: key.publish.clone(),
        consume: key.consume.clone(),
        limits: protocol::LimitsFrame {
            max_frame_bytes: limits.max_frame_bytes,
            max_batch: limits.max_batch,
            max_connections_per_key: limits.max_connections_per_key,
        },
    };
    if send(&mut socket, &welcome).await.is_err() {
        return;
    }
    info!(key = %key.name, %connection, "gateway client connected");
    match requests(&state, &mut socket, &key).await {
        Ended::Gone => {}
        Ended::Refused(id, refusal) => refuse(&mut socket, id, refusal).await,
    }
    info!(key = %key.name, %connection, "gateway client disconnected");
}

/// Waits for the `hello` and checks it: the signature first (so only the
/// holder of the private key learns whether the key is registered), then
/// the key.
async fn login(state: &GatewayState, socket: &mut WebSocket, nonce: &[u8; 32]) -> Result<LoginKey, Ended> {
    let text = loop {
        match socket.recv().await {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Err(Ended::Gone),
            Some(Ok(Message::Text(text))) => break text,
            Some(Ok(Message::Binary(_))) => {
                return Err(Ended::Refused(
                    None,
                    Refusal::new(Code::AuthFailed, "binary frames are not part of sluice.v1"),
                ))
            }
            Some(Ok(_)) => continue,
        }
    };
    let failed = |message: String| Ended::Refused(None, Refusal::new(Code::AuthFailed, message));
    let envelope = protocol::envelope(&text).map_err(|r| failed(format!("a malformed hello: {}", r.message)))?;
    if envelope.kind != "hello" {
        let refusal =
            Refusal::new(Code::NotAuthenticated, format!("{:?} before logging in: send hello first", envelope.kind));
        return Err(Ended::Refused(envelope.id, refusal));
    }
    let hello: Hello =
        protocol::parse("hello", envelope.body).map_err(|r| failed(format!("a malformed hello: {}", r.message)))?;
    if hello.client.as_ref().is_some_and(|c| c.chars().count() > 100) {
        return Err(failed("a malformed hello: `client` is at most 100 characters".to_string()));
    }
    let public_key = keys::decode_public_key(&hello.public_key).map_err(|r| failed(format!("public key: {r}")))?;
    auth::verify(nonce, &public_key, &hello.signature).map_err(failed)?;
    let key = keys::login_key(state.pool(), &public_key).await.map_err(|e| {
        warn!(error = %e, "gateway login could not read the keys");
        Ended::Refused(None, Refusal::new(Code::Internal, "the database failed; try again"))
    })?;
    match key {
        None => Err(failed("no gateway key is registered for this public key".to_string())),
        Some(k) if k.revoked => Err(failed(format!("gateway key {:?} is revoked", k.name))),
        Some(k) => {
            debug!(key = %k.name, client = hello.client.as_deref().unwrap_or(""), "gateway login");
            Ok(k)
        }
    }
}

/// Answers requests in order until the connection ends.
async fn requests(state: &GatewayState, socket: &mut WebSocket, key: &LoginKey) -> Ended {
    let mut pings = interval(PING_EVERY);
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    pings.tick().await;
    let mut checks = interval(REVOCATION_CHECK);
    checks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    checks.tick().await;
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            received = socket.recv() => {
                last_heard = Instant::now();
                let text = match received {
                    None | Some(Ok(Message::Close(_))) => return Ended::Gone,
                    Some(Err(e)) => return too_large(state, e).map_or(Ended::Gone, |r| Ended::Refused(None, r)),
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        let refusal = Refusal::new(Code::Malformed, "binary frames are not part of sluice.v1; send JSON as text");
                        if send(socket, &error(None, refusal)).await.is_err() {
                            return Ended::Gone;
                        }
                        continue;
                    }
                    Some(Ok(_)) => continue,
                };
                let answer = match answer(state, key, &text).await {
                    Ok(frame) => frame,
                    Err((id, refusal)) if refusal.code.closes() => return Ended::Refused(id, refusal),
                    Err((id, refusal)) => error(id, refusal),
                };
                if send(socket, &answer).await.is_err() {
                    return Ended::Gone;
                }
            }
            _ = pings.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    debug!(key = %key.name, "gateway client silent too long");
                    return Ended::Gone;
                }
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return Ended::Gone;
                }
            }
            _ = checks.tick() => {
                match sqlx::query_scalar::<_, bool>(sql::KEY_VALID).bind(key.id).fetch_one(state.pool()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        let refusal = Refusal::new(Code::Revoked, format!("gateway key {:?} was revoked", key.name));
                        return Ended::Refused(None, refusal);
                    }
                    Err(e) => warn!(error = %e, "gateway could not check a key"),
                }
            }
        }
    }
}

/// The answer to one request.
async fn answer(
    state: &GatewayState,
    key: &LoginKey,
    text: &str,
) -> Result<ServerFrame, (Option<protocol::RequestId>, Refusal)> {
    if text.len() > state.limits().max_frame_bytes {
        return Err((None, frame_too_large(state, text.len())));
    }
    let envelope = protocol::envelope(text).map_err(|r| (None, r))?;
    let id = envelope.id.clone();
    let fail = |r: Refusal| (id.clone(), r);
    let needs_id = || Refusal::new(Code::Malformed, format!("{}: a request has an `id`", envelope.kind));
    match envelope.kind.as_str() {
        "publish" => {
            let request_id = id.clone().ok_or_else(|| fail(needs_id()))?;
            let frame: Publish = protocol::parse("publish", envelope.body).map_err(fail)?;
            let events = crate::publish::publish(state, key, frame).await.map_err(fail)?;
            Ok(ServerFrame::Published { id: request_id, events })
        }
        "ping" => {
            let request_id = id.clone().ok_or_else(|| fail(needs_id()))?;
            let _: Ping = protocol::parse("ping", envelope.body).map_err(fail)?;
            Ok(ServerFrame::Pong { id: request_id })
        }
        "hello" => Err(fail(Refusal::new(Code::Invalid, "logged in already"))),
        kind if RESERVED.contains(&kind) => Err(fail(Refusal::new(
            Code::Unsupported,
            format!("{kind:?} is reserved in sluice.v1 but this server does not serve it yet"),
        ))),
        kind => Err(fail(Refusal::new(Code::UnknownType, format!("{kind:?} is not a frame of sluice.v1")))),
    }
}

fn frame_too_large(state: &GatewayState, size: usize) -> Refusal {
    let limit = state.limits().max_frame_bytes;
    Refusal::new(Code::FrameTooLarge, format!("a frame of {size} bytes; at most {limit} (max_frame_bytes)"))
}

/// A receive error that is a frame over the transport's size cap.
fn too_large(state: &GatewayState, e: axum::Error) -> Option<Refusal> {
    let text = e.to_string();
    debug!(error = %text, "gateway connection failed");
    (text.contains("too long") || text.contains("too big") || text.contains("Space limit"))
        .then(|| frame_too_large(state, state.transport_cap()))
}

fn error(id: Option<protocol::RequestId>, refusal: Refusal) -> ServerFrame {
    ServerFrame::Error { id, code: refusal.code, message: refusal.message }
}

/// Sends the error, then closes with its close code.
async fn refuse(socket: &mut WebSocket, id: Option<protocol::RequestId>, refusal: Refusal) {
    debug!(code = ?refusal.code, message = %refusal.message, "gateway closes a connection");
    let code = refusal.code.close_code();
    let _ = send(socket, &error(id, refusal)).await;
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: "".into() }))).await;
}

async fn send(socket: &mut WebSocket, frame: &ServerFrame) -> Result<(), axum::Error> {
    let text = serde_json::to_string(frame).expect("frames serialize");
    socket.send(Message::Text(text.into())).await
}
