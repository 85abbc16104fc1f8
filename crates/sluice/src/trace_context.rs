//! W3C trace context across the queue (the `otel` feature): a publish writes
//! its span's context into each event's metadata (`traceparent`, and
//! `tracestate` when there is one), and the handler's span takes it as its
//! OpenTelemetry parent, so one trace runs from the publisher through the
//! queue into the handler. A handler whose event carries none starts a trace
//! of its own rather than joining the subscriber's long-lived span.
//!
//! The format is read and written here (a `traceparent` is four dashed hex
//! fields), so the library needs neither an OpenTelemetry SDK nor a global
//! propagator.

use std::collections::BTreeMap;
use std::str::FromStr;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The metadata key of the W3C `traceparent`.
pub(crate) const TRACEPARENT: &str = "traceparent";
/// The metadata key of the W3C `tracestate`.
pub(crate) const TRACESTATE: &str = "tracestate";

/// The current span's trace context, as W3C headers.
pub(crate) struct Carried {
    traceparent: String,
    tracestate: Option<String>,
}

/// The context of the current span, when it belongs to an OpenTelemetry
/// trace (a `tracing-opentelemetry` layer is installed and the span is enabled).
pub(crate) fn current() -> Option<Carried> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span = span.span_context();
    if !span.is_valid() {
        return None;
    }
    Some(Carried {
        traceparent: format!(
            "00-{:032x}-{:016x}-{:02x}",
            span.trace_id(),
            span.span_id(),
            span.trace_flags() & TraceFlags::SAMPLED
        ),
        tracestate: Some(span.trace_state().header()).filter(|s| !s.is_empty()),
    })
}

impl Carried {
    /// Writes the context into an event's metadata, unless the publisher set
    /// a `traceparent` of its own.
    pub(crate) fn inject(&self, metadata: &mut BTreeMap<String, String>) {
        if metadata.contains_key(TRACEPARENT) {
            return;
        }
        metadata.insert(TRACEPARENT.to_string(), self.traceparent.clone());
        if let Some(state) = &self.tracestate {
            metadata.insert(TRACESTATE.to_string(), state.clone());
        }
    }
}

/// Makes the event's trace context the OpenTelemetry parent of the handler's
/// span (not yet entered), or makes that span a root when there is none.
pub(crate) fn adopt(span: &tracing::Span, metadata: &BTreeMap<String, String>) {
    let parent = match metadata.get(TRACEPARENT).and_then(|tp| parse(tp, metadata.get(TRACESTATE))) {
        Some(remote) => opentelemetry::Context::new().with_remote_span_context(remote),
        None => opentelemetry::Context::new(),
    };
    // Fails only when no OpenTelemetry layer is installed or the span is disabled.
    let _ = span.set_parent(parent);
}

/// Reads a W3C `traceparent` (version-traceid-spanid-flags); `None` when it
/// is malformed or names no trace.
fn parse(traceparent: &str, tracestate: Option<&String>) -> Option<SpanContext> {
    let mut fields = traceparent.trim().split('-');
    let (version, trace, span, flags) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    // Version ff is invalid; version 00 has exactly four fields, later ones may add more.
    if !hex(version, 2) || version == "ff" || (version == "00" && fields.next().is_some()) {
        return None;
    }
    if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    if trace == TraceId::INVALID || span == SpanId::INVALID {
        return None;
    }
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()?) & TraceFlags::SAMPLED;
    let state = tracestate.and_then(|s| TraceState::from_str(s).ok()).unwrap_or_default();
    Some(SpanContext::new(trace, span, flags, true, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_traceparent_with_its_tracestate() {
        let state = "congo=t61rcWkgMzE".to_string();
        let span = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Some(&state)).unwrap();
        assert_eq!(span.trace_id(), TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap());
        assert_eq!(span.span_id(), SpanId::from_hex("00f067aa0ba902b7").unwrap());
        assert!(span.is_sampled());
        assert!(span.is_remote());
        assert_eq!(span.trace_state().header(), state);
    }

    #[test]
    fn refuses_malformed_or_empty_traceparents() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse(bad, None).is_none(), "{bad:?} was accepted");
        }
        // A later version may carry more fields.
        assert!(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more", None).is_some());
    }

    #[test]
    fn never_overwrites_the_publishers_own_traceparent() {
        let carried = Carried { traceparent: "00-aa-bb-01".into(), tracestate: Some("k=v".into()) };
        let mut own = BTreeMap::from([(TRACEPARENT.to_string(), "mine".to_string())]);
        carried.inject(&mut own);
        assert_eq!(own, BTreeMap::from([(TRACEPARENT.to_string(), "mine".to_string())]));
        let mut none = BTreeMap::new();
        carried.inject(&mut none);
        assert_eq!(none.get(TRACEPARENT).map(String::as_str), Some("00-aa-bb-01"));
        assert_eq!(none.get(TRACESTATE).map(String::as_str), Some("k=v"));
    }
}
