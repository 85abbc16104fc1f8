//! One client's connection: the challenge, the login, then requests
//! answered in order until the socket closes, the client falls silent or
//! its key is revoked.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::time::{interval, timeout, Instant, MissedTickBehavior};
use tracing::{debug, info, warn};
use uuid::Uuid;

use std::collections::HashMap;

use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use crate::auth;
use crate::deliver::{self, How, InHand, Settled, Taking};
use crate::keys::{self, LoginKey};
use crate::protocol::{
    self, ByToken, Code, DeferFrame, Done, Hello, MoreCredit, NackFrame, Ping, Publish, Refusal, ServerFrame,
    Subscribe, PROTOCOL,
};
use crate::{sql, GatewayState};

/// How often the server pings a client, and how long a client may stay
/// silent (no frame, no pong) before it is taken for gone.
pub const PING_EVERY: Duration = Duration::from_secs(15);
/// See [`PING_EVERY`].
pub const SILENCE_LIMIT: Duration = Duration::from_secs(45);

/// How often an open connection beats (what its client holds, for
/// `sluice workers list`) and checks that its key is not revoked.
pub const REVOCATION_CHECK: Duration = Duration::from_secs(5);

enum Ended {
    /// The client closed, or the socket broke.
    Gone,
    /// The server refused something that ends the connection.
    Refused(Option<protocol::RequestId>, Refusal),
    /// The server could not tell whether the key may still be used: it
    /// closes with this WebSocket close code and reason, no error frame
    /// (as when it stops), and the client reconnects.
    Closed(u16, &'static str),
}

/// The close code when the key could not be checked: 1011, the server's error.
const UNCHECKED_CLOSE: u16 = 1011;
const UNCHECKED_REASON: &str = "the gateway could not check the key; reconnect";

pub(crate) async fn serve(state: GatewayState, mut socket: WebSocket, place: crate::Unauthenticated) {
    let nonce = auth::nonce();
    let challenge = ServerFrame::Challenge { protocol: PROTOCOL, nonce: auth::encode(&nonce) };
    if send(&mut socket, &challenge).await.is_err() {
        return;
    }
    let (key, client) = match timeout(state.limits().auth_timeout, login(&state, &mut socket, &nonce)).await {
        Ok(Ok(login)) => login,
        Ok(Err(Ended::Gone | Ended::Closed(..))) => return,
        Ok(Err(Ended::Refused(id, refusal))) => return refuse(&mut socket, id, refusal).await,
        Err(_) => {
            let limit = state.limits().auth_timeout;
            let refusal = Refusal::new(Code::AuthTimeout, format!("no hello within {limit:?} of the challenge"));
            return refuse(&mut socket, None, refusal).await;
        }
    };
    // Logged in (or refused below): no longer one of those logging in.
    drop(place);
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
            max_credit: limits.max_credit,
            settle_timeout_ms: limits.settle_timeout.as_millis() as u64,
        },
    };
    // Listed before the welcome: a client that is told it is in is listed.
    let listed = sqlx::query(sql::CLIENT_CONNECT)
        .bind(connection)
        .bind(&key.name)
        .bind(client.as_deref())
        .bind(sluice::hostname())
        .bind(std::process::id() as i32)
        .execute(state.pool())
        .await;
    if let Err(e) = listed {
        warn!(error = %e, "could not list a gateway client; it works, unlisted");
    }
    if send(&mut socket, &welcome).await.is_err() {
        return;
    }
    info!(key = %key.name, %connection, "gateway client connected");
    let (outbound, mut deliveries) = mpsc::unbounded_channel();
    let mut session =
        Session { state, key, connection, outbound, in_hand: InHand::default(), taking: HashMap::new(), next: 1 };
    match requests(&mut session, &mut socket, &mut deliveries).await {
        Ended::Gone => {}
        Ended::Refused(id, refusal) => refuse(&mut socket, id, refusal).await,
        Ended::Closed(code, reason) => {
            let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
        }
    }
    // Gone: its tasks are released at once, its subscribers stopped.
    drop(deliveries);
    session.in_hand.drop_all();
    let stopping = session.taking.into_values().map(|t| t.handle.shutdown(Duration::from_secs(5)));
    futures::future::join_all(stopping).await;
    if let Err(e) = sqlx::query(sql::CLIENT_DISCONNECT).bind(connection).execute(session.state.pool()).await {
        warn!(error = %e, "could not mark a gateway client disconnected; it reads so 30 s after its last beat");
    }
    info!(key = %session.key.name, %connection, "gateway client disconnected");
}

/// One logged-in connection.
struct Session {
    state: GatewayState,
    key: LoginKey,
    connection: Uuid,
    /// Where handlers put deliveries for the socket.
    outbound: mpsc::UnboundedSender<ServerFrame>,
    in_hand: InHand,
    /// The consumers it takes tasks from, by subscription id.
    taking: HashMap<String, Taking>,
    next: u64,
}

/// Waits for the `hello` and checks it: the signature first (so only the
/// holder of the private key learns whether the key is registered), then
/// the key.
async fn login(
    state: &GatewayState,
    socket: &mut WebSocket,
    nonce: &[u8; 32],
) -> Result<(LoginKey, Option<String>), Ended> {
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
    // Bounded like every later frame: a hello is a few hundred bytes.
    if text.len() > state.limits().max_frame_bytes {
        return Err(Ended::Refused(None, frame_too_large(state, text.len())));
    }
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
            Ok((k, hello.client))
        }
    }
}

/// Answers requests in order, and sends deliveries, until the connection ends.
async fn requests(
    session: &mut Session,
    socket: &mut WebSocket,
    deliveries: &mut mpsc::UnboundedReceiver<ServerFrame>,
) -> Ended {
    let state = session.state.clone();
    let key = session.key.clone();
    let key = &key;
    let mut pings = interval(PING_EVERY);
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    pings.tick().await;
    let mut checks = interval(REVOCATION_CHECK);
    checks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    checks.tick().await;
    let mut last_heard = Instant::now();
    // Answers in the order of their requests; settles run meanwhile, so a
    // client acking as it goes is not held to one database round trip at a time.
    let mut answers: FuturesOrdered<BoxFuture<'static, ServerFrame>> = FuturesOrdered::new();
    loop {
        tokio::select! {
            Some(frame) = answers.next(), if !answers.is_empty() => {
                if send(socket, &frame).await.is_err() {
                    return Ended::Gone;
                }
            }
            received = socket.recv() => {
                last_heard = Instant::now();
                let text = match received {
                    None | Some(Ok(Message::Close(_))) => return Ended::Gone,
                    Some(Err(e)) => return too_large(&state, e).map_or(Ended::Gone, |r| Ended::Refused(None, r)),
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
                let answer = match answer(session, &text).await {
                    Ok(answer) => answer,
                    Err((id, refusal)) if refusal.code.closes() => return Ended::Refused(id, refusal),
                    Err((id, refusal)) => futures::future::ready(error(id, refusal)).boxed(),
                };
                answers.push_back(answer);
            }
            Some(frame) = deliveries.recv() => {
                if send(socket, &frame).await.is_err() {
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
                let credit: usize = session.taking.values().map(|t| t.credit.get()).sum();
                let beat = sqlx::query_scalar::<_, bool>(sql::CLIENT_BEAT)
                    .bind(session.connection)
                    .bind(session.taking.len() as i32)
                    .bind(credit.min(i32::MAX as usize) as i32)
                    .bind(session.in_hand.len() as i32)
                    .bind(key.id);
                match beat.fetch_one(state.pool()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        let refusal = Refusal::new(Code::Revoked, format!("gateway key {:?} was revoked", key.name));
                        return Ended::Refused(None, refusal);
                    }
                    // Fail closed: a revoked key must not keep a connection
                    // because the database could not say so.
                    Err(e) => {
                        warn!(error = %e, key = %key.name, "gateway could not check a key; closing its connection");
                        return Ended::Closed(UNCHECKED_CLOSE, UNCHECKED_REASON);
                    }
                }
            }
        }
    }
}

/// An answer: ready, or once a settle is done.
type Answer = BoxFuture<'static, ServerFrame>;

fn now(frame: ServerFrame) -> Answer {
    futures::future::ready(frame).boxed()
}

/// A settle of the task of `token`, answered when its handler has done it.
fn settling(in_hand: &InHand, id: protocol::RequestId, token: i64, how: How) -> Answer {
    let in_hand = in_hand.clone();
    async move {
        match deliver::settle(&in_hand, token, how).await {
            Ok(Settled::Acked) => ServerFrame::Ok(Done::to(id)),
            Ok(Settled::Nacked(state)) => {
                ServerFrame::Ok(Done { state: Some(state.as_str().to_string()), ..Done::to(id) })
            }
            Ok(Settled::Deferred(due)) => ServerFrame::Ok(Done { due: Some(due), ..Done::to(id) }),
            Err(refusal) => error(Some(id), refusal),
        }
    }
    .boxed()
}

/// The answer to one request.
async fn answer(session: &mut Session, text: &str) -> Result<Answer, (Option<protocol::RequestId>, Refusal)> {
    let state = session.state.clone();
    if text.len() > state.limits().max_frame_bytes {
        return Err((None, frame_too_large(&state, text.len())));
    }
    let envelope = protocol::envelope(text).map_err(|r| (None, r))?;
    let fail = |r: Refusal| (envelope.id.clone(), r);
    let kind = envelope.kind.clone();
    if kind == "hello" {
        return Err(fail(Refusal::new(Code::Invalid, "logged in already")));
    }
    if !KINDS.contains(&kind.as_str()) {
        return Err(fail(Refusal::new(Code::UnknownType, format!("{kind:?} is not a frame of sluice.v1"))));
    }
    let Some(id) = envelope.id.clone() else {
        return Err(fail(Refusal::new(Code::Malformed, format!("{kind}: a request has an `id`"))));
    };
    let body = envelope.body;
    match kind.as_str() {
        "publish" => {
            let frame: Publish = protocol::parse(&kind, body).map_err(fail)?;
            let events = crate::publish::publish(&state, &session.key, frame).await.map_err(fail)?;
            Ok(now(ServerFrame::Published { id, events }))
        }
        "ping" => {
            let _: Ping = protocol::parse(&kind, body).map_err(fail)?;
            Ok(now(ServerFrame::Pong { id }))
        }
        "subscribe" => {
            let frame: Subscribe = protocol::parse(&kind, body).map_err(fail)?;
            if session.taking.values().any(|t| t.stream == frame.stream && t.consumer == frame.consumer) {
                let message =
                    format!("already taking tasks from consumer {:?} of stream {:?}", frame.consumer, frame.stream);
                return Err(fail(Refusal::new(Code::Invalid, message)));
            }
            let subscription = format!("s{}", session.next);
            let taking = deliver::subscribe(
                &state,
                &session.key,
                subscription.clone(),
                &frame,
                session.outbound.clone(),
                session.in_hand.clone(),
            )
            .await
            .map_err(fail)?;
            session.next += 1;
            session.taking.insert(subscription.clone(), taking);
            Ok(now(ServerFrame::Subscribed { id, subscription }))
        }
        "credit" => {
            let frame: MoreCredit = protocol::parse(&kind, body).map_err(fail)?;
            let taking = session.taking.get(&frame.subscription).ok_or_else(|| {
                fail(Refusal::new(
                    Code::NotFound,
                    format!("no subscription {:?} on this connection", frame.subscription),
                ))
            })?;
            deliver::check_credit(frame.add, taking.credit.get(), state.limits().max_credit).map_err(fail)?;
            taking.credit.add(frame.add);
            Ok(now(ServerFrame::Ok(Done { credit: Some(taking.credit.get()), ..Done::to(id) })))
        }
        "ack" => {
            let frame: ByToken = protocol::parse(&kind, body).map_err(fail)?;
            let token = frame.lease_token.get().map_err(fail)?;
            Ok(settling(&session.in_hand, id, token, How::Ack))
        }
        "nack" => {
            let frame: NackFrame = protocol::parse(&kind, body).map_err(fail)?;
            let token = frame.lease_token.get().map_err(fail)?;
            let nack = deliver::nack(&frame.action, frame.reason).map_err(fail)?;
            Ok(settling(&session.in_hand, id, token, How::Nack(nack)))
        }
        "defer" => {
            let frame: DeferFrame = protocol::parse(&kind, body).map_err(fail)?;
            let token = frame.lease_token.get().map_err(fail)?;
            let defer = deliver::defer(frame.delay_ms, frame.until, frame.priority, frame.reason).map_err(fail)?;
            Ok(settling(&session.in_hand, id, token, How::Defer(defer)))
        }
        "extend" => {
            let frame: ByToken = protocol::parse(&kind, body).map_err(fail)?;
            let token = frame.lease_token.get().map_err(fail)?;
            deliver::extend(&session.in_hand, token).map_err(fail)?;
            Ok(now(ServerFrame::Ok(Done::to(id))))
        }
        _ => unreachable!("every kind of KINDS is answered"),
    }
}

/// The requests of sluice.v1 after the login.
const KINDS: &[&str] = &["publish", "ping", "subscribe", "credit", "ack", "nack", "defer", "extend"];

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
