//! A trace crosses the queue (the `otel` feature): the publishing span's
//! W3C `traceparent` travels in the event's metadata and becomes the
//! handler span's parent. Run with `cargo test --test tracing --features otel`.

use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{json, Value};
use sluice::{
    create_consumer, create_stream, publish, sub, ConsumerOptions, HandlerError, Message, NewEvent, StreamOptions,
    Subscription,
};
use support::TestDb;
use tokio::sync::mpsc;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

const WAIT: Duration = Duration::from_secs(30);

/// The trace of the span the caller is in.
fn current_trace() -> TraceId {
    tracing::Span::current().context().span().span_context().trace_id()
}

/// What a handler saw: its event's name, its own span's trace and the
/// `traceparent` its event carried.
type Seen = (String, TraceId, Option<String>);

#[tokio::test]
async fn the_publishers_trace_reaches_the_handlers_span() {
    // An SDK provider gives spans real ids; nothing is exported.
    let provider = SdkTracerProvider::builder().build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("sluice-test"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("no other subscriber in this test binary");

    let db = TestDb::new().await;
    create_stream(&db.pool, "orders", StreamOptions::default()).await.unwrap();
    create_consumer(&db.pool, "orders", "billing", ConsumerOptions::default()).await.unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel::<Seen>();
    let handle = sub(&db.pool, Subscription::new("orders", "billing"), move |msg: Message<Value>| {
        let tx = tx.clone();
        async move {
            let name = msg.payload()["name"].as_str().unwrap().to_string();
            tx.send((name, current_trace(), msg.metadata().get("traceparent").cloned())).unwrap();
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();

    let event = |name: &str| NewEvent::new("orders.eu.created", &json!({ "name": name })).unwrap();
    // Published in a span of the caller's: its trace goes with the event.
    let checkout = tracing::info_span!("checkout");
    let checkout_trace = async {
        publish(&db.pool, "orders", event("in a span")).await.unwrap();
        current_trace()
    }
    .instrument(checkout)
    .await;
    assert_ne!(checkout_trace, TraceId::INVALID);
    // A traceparent the publisher set itself is kept, even inside a span.
    let own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    publish(&db.pool, "orders", event("its own").metadata("traceparent", own))
        .instrument(tracing::info_span!("elsewhere"))
        .await
        .unwrap();
    // Outside any span: the trace begins at the publish's own span.
    publish(&db.pool, "orders", event("no span")).await.unwrap();
    // A traceparent that cannot be read: kept, and the handler starts a trace of its own.
    publish(&db.pool, "orders", event("garbage").metadata("traceparent", "not-a-traceparent")).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(tokio::time::timeout(WAIT, rx.recv()).await.expect("four handlers ran").unwrap());
    }
    handle.shutdown(Duration::from_secs(10)).await;
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let [(_, garbage_trace, garbage), (_, in_span, carried), (_, own_trace, kept), (_, no_span, root)] =
        seen.try_into().unwrap();

    let carried = carried.expect("the event carries its publisher's traceparent");
    assert!(carried.starts_with(&format!("00-{checkout_trace:032x}-")), "{carried}");
    assert_eq!(in_span, checkout_trace, "the handler's span is in the publisher's trace");

    assert_eq!(kept.as_deref(), Some(own));
    assert_eq!(own_trace, TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap());

    let root = root.expect("a publish outside any span carries its own span's trace");
    assert!(root.starts_with(&format!("00-{no_span:032x}-")), "{root}");
    assert_ne!(no_span, checkout_trace);

    assert_eq!(garbage.as_deref(), Some("not-a-traceparent"));
    assert_ne!(garbage_trace, TraceId::INVALID, "a handler without a readable trace starts its own");
    assert!(![checkout_trace, own_trace, no_span].contains(&garbage_trace));
}
