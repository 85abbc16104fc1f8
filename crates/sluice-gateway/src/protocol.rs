//! The frames of protocol `sluice.v1` (docs/GATEWAY.md) and its error codes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol this crate speaks, as the WebSocket subprotocol and in the challenge.
pub const PROTOCOL: &str = "sluice.v1";

/// What a client signs at login, before the nonce and its public key.
pub const AUTH_CONTEXT: &[u8] = b"sluice.v1 gateway authentication\0";

/// An error frame's code: what the client can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// Unknown or revoked key, a signature that does not verify, a malformed hello.
    AuthFailed,
    /// No hello in time.
    AuthTimeout,
    /// A frame before the welcome.
    NotAuthenticated,
    /// The key has as many connections as it may.
    TooManyConnections,
    /// A frame over the size limit.
    FrameTooLarge,
    /// Not a JSON object, a binary frame, a missing or unknown field, a wrong type.
    Malformed,
    /// A `type` this version does not define.
    UnknownType,
    /// A value out of range.
    Invalid,
    /// More events in one publish than allowed.
    BatchTooLarge,
    /// The key may not do that.
    Forbidden,
    /// The stream, consumer or subscription does not exist.
    NotFound,
    /// More credit than allowed.
    CreditExceeded,
    /// The lease token holds no task on this connection.
    LeaseLost,
    /// The key was revoked while connected.
    Revoked,
    /// The database failed; the request may be retried.
    Internal,
}

impl Code {
    /// Whether the server closes the connection after this error.
    pub fn closes(self) -> bool {
        matches!(
            self,
            Code::AuthFailed
                | Code::AuthTimeout
                | Code::NotAuthenticated
                | Code::TooManyConnections
                | Code::FrameTooLarge
                | Code::Revoked
        )
    }

    /// The WebSocket close code that goes with it.
    pub fn close_code(self) -> u16 {
        match self {
            Code::FrameTooLarge => 1009,
            _ => 1008,
        }
    }
}

/// A request id, echoed in the answer: a string or a number, as the client sent it.
pub(crate) type RequestId = Value;

/// What the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ServerFrame {
    Challenge {
        protocol: &'static str,
        nonce: String,
    },
    Welcome {
        key: String,
        connection: String,
        publish: Vec<String>,
        consume: Vec<String>,
        limits: LimitsFrame,
    },
    Published {
        id: RequestId,
        events: Vec<PublishedEvent>,
    },
    Pong {
        id: RequestId,
    },
    Subscribed {
        id: RequestId,
        subscription: String,
    },
    /// A `credit`, `ack`, `nack`, `defer` or `extend` done; the optional
    /// fields say what it did.
    Ok(Done),
    Deliver {
        subscription: String,
        lease_token: String,
        stream: String,
        consumer: String,
        event_id: i64,
        attempt: i32,
        subject: String,
        payload: Value,
        metadata: BTreeMap<String, String>,
        key: Option<String>,
        priority: u8,
        created_at: chrono::DateTime<chrono::Utc>,
    },
    /// A delivered task the client did not settle in time: taken back.
    Expired {
        subscription: String,
        lease_token: String,
    },
    Error {
        id: Option<RequestId>,
        code: Code,
        message: String,
    },
}

/// The body of an `ok`.
#[derive(Debug, Serialize)]
pub(crate) struct Done {
    pub(crate) id: RequestId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) credit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) due: Option<chrono::DateTime<chrono::Utc>>,
}

impl Done {
    /// A bare `ok` to request `id`; the fields that say more are set with
    /// `Done { credit: .., ..Done::to(id) }`.
    pub(crate) fn to(id: RequestId) -> Done {
        Done { id, credit: None, state: None, due: None }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct LimitsFrame {
    pub(crate) max_frame_bytes: usize,
    pub(crate) max_batch: usize,
    pub(crate) max_connections_per_key: usize,
    pub(crate) max_credit: usize,
    pub(crate) settle_timeout_ms: u64,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct PublishedEvent {
    pub(crate) id: i64,
    pub(crate) duplicate: bool,
}

/// `hello`: the answer to the challenge.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Hello {
    pub(crate) public_key: String,
    pub(crate) signature: String,
    #[serde(default)]
    pub(crate) client: Option<String>,
}

/// `publish`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Publish {
    pub(crate) stream: String,
    pub(crate) events: Vec<EventFrame>,
}

/// One event of a `publish`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventFrame {
    pub(crate) subject: String,
    pub(crate) payload: Value,
    #[serde(default)]
    pub(crate) metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) key: Option<String>,
    #[serde(default)]
    pub(crate) priority: Option<i64>,
    #[serde(default)]
    pub(crate) deliver_at: Option<String>,
    #[serde(default)]
    pub(crate) idempotency_key: Option<String>,
}

/// `subscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Subscribe {
    pub(crate) stream: String,
    pub(crate) consumer: String,
    pub(crate) credit: usize,
}

/// `credit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoreCredit {
    pub(crate) subscription: String,
    pub(crate) add: usize,
}

/// A lease token: a string of digits (as the server sends it) or a number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Token {
    Text(String),
    Number(i64),
}

impl Token {
    pub(crate) fn get(&self) -> Result<i64, Refusal> {
        match self {
            Token::Number(n) => Ok(*n),
            Token::Text(t) => {
                t.parse().map_err(|_| Refusal::new(Code::Malformed, format!("lease token {t:?} is not a number")))
            }
        }
    }
}

/// `ack` and `extend`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ByToken {
    pub(crate) lease_token: Token,
}

/// `nack`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NackFrame {
    pub(crate) lease_token: Token,
    pub(crate) action: String,
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

/// `defer`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeferFrame {
    pub(crate) lease_token: Token,
    #[serde(default)]
    pub(crate) delay_ms: Option<u64>,
    #[serde(default)]
    pub(crate) until: Option<String>,
    #[serde(default)]
    pub(crate) priority: Option<i64>,
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

/// `ping`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Ping {}

/// A frame's `type` and `id`, read before the rest so that an error can
/// name the request; `body` is the rest, without them.
pub(crate) struct Envelope {
    pub(crate) kind: String,
    pub(crate) id: Option<RequestId>,
    pub(crate) body: serde_json::Map<String, Value>,
}

/// An error for the client: its code and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: Code,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Refusal {
        Refusal { code, message: message.into() }
    }
}

/// Reads a text frame's envelope: a JSON object with a string `type`, and
/// an `id` that is a string or a number of at most 100 characters.
pub(crate) fn envelope(text: &str) -> Result<Envelope, Refusal> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| Refusal::new(Code::Malformed, format!("not JSON: {e}")))?;
    let Value::Object(mut body) = value else {
        return Err(Refusal::new(Code::Malformed, "a frame is a JSON object"));
    };
    // Taken out of the body: each type's struct is the rest.
    let id = match body.remove("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_))) if id.to_string().len() <= 102 => Some(id),
        Some(other) => {
            return Err(Refusal::new(
                Code::Malformed,
                format!("`id` is a string or a number of at most 100 characters, not {other}"),
            ))
        }
    };
    let kind = match body.remove("type") {
        Some(Value::String(kind)) => kind,
        Some(other) => return Err(Refusal::new(Code::Malformed, format!("`type` is a string, not {other}"))),
        None => return Err(Refusal::new(Code::Malformed, "a frame has a `type`")),
    };
    Ok(Envelope { kind, id, body })
}

/// The rest of a frame, as the struct of its type.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    kind: &str,
    body: serde_json::Map<String, Value>,
) -> Result<T, Refusal> {
    serde_json::from_value(Value::Object(body)).map_err(|e| Refusal::new(Code::Malformed, format!("{kind}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_name_what_is_wrong() {
        assert_eq!(envelope("{").err().unwrap().code, Code::Malformed);
        assert!(envelope("[1]").err().unwrap().message.contains("JSON object"));
        assert!(envelope(r#"{"id": 1}"#).err().unwrap().message.contains("`type`"));
        assert!(envelope(r#"{"type": 5}"#).err().unwrap().message.contains("`type` is a string"));
        assert!(envelope(r#"{"type": "ping", "id": [1]}"#).err().unwrap().message.contains("`id`"));
        let e = envelope(r#"{"type": "ping", "id": "p1"}"#).unwrap();
        assert_eq!((e.kind.as_str(), e.id), ("ping", Some(Value::from("p1"))));
        let p: Result<Ping, _> = parse("ping", envelope(r#"{"type": "ping", "id": 1, "extra": 2}"#).unwrap().body);
        assert!(p.unwrap_err().message.contains("unknown field `extra`"));
    }

    #[test]
    fn errors_serialize_as_the_document_says() {
        let frame = ServerFrame::Error { id: None, code: Code::TooManyConnections, message: "x".into() };
        assert_eq!(
            serde_json::to_value(&frame).unwrap(),
            serde_json::json!({"type": "error", "id": null, "code": "too_many_connections", "message": "x"})
        );
        assert!(Code::AuthFailed.closes() && !Code::Forbidden.closes());
        assert_eq!(Code::FrameTooLarge.close_code(), 1009);
    }
}
