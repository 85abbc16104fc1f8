//! `publish`: one event or a batch, in one transaction, with idempotency
//! keys remembered for a day per stream and publishing key.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sluice::{NewEvent, Priority};
use tracing::warn;

use crate::keys::LoginKey;
use crate::protocol::{Code, EventFrame, Publish, PublishedEvent, Refusal};
use crate::{sql, GatewayState};

/// The longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// Publishes a frame's events for `key`: all or none.
pub(crate) async fn publish(
    state: &GatewayState,
    key: &LoginKey,
    frame: Publish,
) -> Result<Vec<PublishedEvent>, Refusal> {
    let stream = frame.stream;
    sluice::check_name("stream", &stream).map_err(|e| Refusal::new(Code::Invalid, e.to_string()))?;
    if !key.publish.contains(&stream) {
        return Err(Refusal::new(Code::Forbidden, format!("key {:?} may not publish to stream {stream:?}", key.name)));
    }
    let limit = state.limits().max_batch;
    match frame.events.len() {
        0 => return Err(Refusal::new(Code::Invalid, "a publish has at least one event")),
        n if n > limit => {
            return Err(Refusal::new(
                Code::BatchTooLarge,
                format!("{n} events in one publish; at most {limit} (max_batch)"),
            ))
        }
        _ => {}
    }
    let mut events = Vec::with_capacity(frame.events.len());
    let mut keys: Vec<Option<String>> = Vec::with_capacity(frame.events.len());
    let mut seen = HashSet::new();
    for (i, event) in frame.events.into_iter().enumerate() {
        if let Some(k) = &event.idempotency_key {
            let chars = k.chars().count();
            if chars == 0 || chars > MAX_IDEMPOTENCY_KEY {
                return Err(invalid(
                    i,
                    format!("an idempotency key is 1 to {MAX_IDEMPOTENCY_KEY} characters, this one {chars}"),
                ));
            }
            if !seen.insert(k.clone()) {
                return Err(invalid(i, format!("idempotency key {k:?} is used twice in this batch")));
            }
        }
        keys.push(event.idempotency_key.clone());
        events.push(new_event(event).map_err(|reason| invalid(i, reason))?);
    }

    let pool = state.pool();
    let stream_id: Option<i32> =
        sqlx::query_scalar(sql::STREAM_ID).bind(&stream).fetch_optional(pool).await.map_err(internal)?;
    let Some(stream_id) = stream_id else {
        return Err(Refusal::new(Code::NotFound, format!("stream {stream:?} does not exist")));
    };
    // Claimed in one order by every publish, so two publishes sharing keys
    // wait for each other instead of deadlocking.
    let mut wanted: Vec<String> = keys.iter().flatten().cloned().collect();
    wanted.sort();
    let mut tx = pool.begin().await.map_err(internal)?;
    let claimed: HashSet<String> = if wanted.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_scalar(sql::IDEMPOTENCY_CLAIM)
            .bind(stream_id)
            .bind(&wanted)
            .bind(key.id)
            .fetch_all(&mut *tx)
            .await
            .map_err(internal)?
            .into_iter()
            .collect()
    };
    let taken: Vec<String> = wanted.iter().filter(|k| !claimed.contains(*k)).cloned().collect();
    let existing: HashMap<String, i64> = if taken.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as(sql::IDEMPOTENCY_EXISTING)
            .bind(stream_id)
            .bind(&taken)
            .bind(key.id)
            .fetch_all(&mut *tx)
            .await
            .map_err(internal)?
            .into_iter()
            .collect()
    };
    let fresh: Vec<usize> =
        (0..events.len()).filter(|&i| keys[i].as_ref().is_none_or(|k| !existing.contains_key(k))).collect();
    let mut events: Vec<Option<NewEvent>> = events.into_iter().map(Some).collect();
    let to_publish: Vec<NewEvent> = fresh.iter().map(|&i| events[i].take().expect("each event once")).collect();
    let ids = if to_publish.is_empty() {
        Vec::new()
    } else {
        sluice::publish_batch(&mut *tx, &stream, to_publish).await.map_err(|e| match e {
            sluice::Error::StreamNotFound { .. } => Refusal::new(Code::NotFound, e.to_string()),
            sluice::Error::Invalid(_) => Refusal::new(Code::Invalid, e.to_string()),
            e => {
                warn!(error = %e, stream, "a gateway publish failed");
                Refusal::new(Code::Internal, format!("the publish failed, nothing was stored: {e}"))
            }
        })?
    };
    let (recorded_keys, recorded_ids): (Vec<String>, Vec<i64>) =
        fresh.iter().zip(&ids).filter_map(|(&i, id)| keys[i].clone().map(|k| (k, id.0))).unzip();
    if !recorded_keys.is_empty() {
        sqlx::query(sql::IDEMPOTENCY_RECORD)
            .bind(stream_id)
            .bind(&recorded_keys)
            .bind(&recorded_ids)
            .bind(key.id)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
    }
    tx.commit().await.map_err(internal)?;
    if !wanted.is_empty() {
        state.forget_old_idempotency_keys();
    }

    let mut published = ids.into_iter();
    Ok(keys
        .iter()
        .map(|k| match k.as_ref().and_then(|k| existing.get(k)) {
            Some(&id) => PublishedEvent { id, duplicate: true },
            None => PublishedEvent { id: published.next().expect("an id per fresh event").0, duplicate: false },
        })
        .collect())
}

fn invalid(index: usize, reason: String) -> Refusal {
    Refusal::new(Code::Invalid, format!("event {index} of the batch: {reason}"))
}

fn internal(e: sqlx::Error) -> Refusal {
    warn!(error = %e, "a gateway publish failed");
    Refusal::new(Code::Internal, format!("the database failed, nothing was stored: {e}"))
}

/// The library's event for a frame's, or why it cannot be one.
fn new_event(frame: EventFrame) -> Result<NewEvent, String> {
    let mut event = NewEvent::new(frame.subject, &frame.payload).map_err(|e| e.to_string())?;
    for (k, v) in frame.metadata {
        event = event.metadata(k, v);
    }
    if let Some(key) = frame.key {
        event = event.key(key);
    }
    if let Some(p) = frame.priority {
        event = event.priority(Priority::new(p).map_err(|e| e.to_string())?);
    }
    if let Some(at) = frame.deliver_at {
        let at = DateTime::parse_from_rfc3339(&at)
            .map_err(|e| format!("deliver_at {at:?} is not an RFC 3339 time ({e})"))?
            .with_timezone(&Utc);
        event = event.deliver_at(at);
    }
    Ok(event)
}
