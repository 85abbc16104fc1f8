//! The frame every page shares, and small formatting helpers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use sluice::{Accuracy, ConsumerStats, Figure};

use crate::WebState;

const STYLE: &str = r#"
body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.4rem;align-items:center}
header a{color:#cfd6e4;text-decoration:none}header a:hover{color:#fff}header strong{color:#fff}
main{padding:1rem 1.4rem;max-width:80rem}
table{border-collapse:collapse;background:#fff;margin:.5rem 0 1.2rem}
th,td{padding:.3rem .7rem;border-bottom:1px solid #e2e5ea;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.error{color:#a3221a}.field-error{color:#a3221a;font-size:.9em;display:block}
.badge{padding:.05rem .45rem;border-radius:.6rem;background:#e2e5ea;font-size:.85em}
.paused,.discarded,.gone,.disconnected{background:#f6d5d2}.running,.active{background:#d5e8f6}.completed{background:#d7f0d9}
pre{background:#fff;border:1px solid #e2e5ea;padding:.6rem;overflow:auto;max-height:30rem}
form.inline{display:inline}button{cursor:pointer}#status,#actions{margin:1rem 0}
.filters label{margin-right:.8rem;display:inline-block;vertical-align:top}
figure.chart{margin:.3rem 0 1.2rem;background:#fff;padding:.5rem;display:inline-block}
figure.chart figcaption{font-size:.9em;margin-bottom:.3rem}
abbr.inexact{text-decoration:underline dotted;cursor:help}
"#;

const HTMX_CONFIG: &str = r#"{"responseHandling":[{"code":"204","swap":false},{"code":"...","swap":true}]}"#;

/// A whole page: the head, the navigation and `content`. Forms and links
/// are boosted by htmx (`hx-boost`), so they work without it too.
pub(crate) fn page(state: &WebState, title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Sluice" }
                // No favicon: an empty one keeps browsers from asking for /favicon.ico.
                link rel="icon" href="data:,";
                // htmx swaps error responses too: a refused filter (400), a
                // missing task (404) or a refused action (403, 409) is a page
                // that says why, and must be shown rather than dropped.
                meta name="htmx-config" content=(HTMX_CONFIG);
                style { (PreEscaped(STYLE)) }
                script src=(state.href(crate::HTMX_PATH)) defer {}
                @if !state.is_poll_only() { script src=(state.href(crate::SSE_PATH)) defer {} }
            }
            @let live = (!state.is_poll_only()).then(|| state.href("/live"));
            body hx-boost="true" hx-ext=[live.as_ref().map(|_| "sse")] sse-connect=[live] {
                header {
                    strong { "Sluice" }
                    a href=(state.href("/")) { "Overview" }
                    a href=(state.href("/tasks")) { "Tasks" }
                    a href=(state.href("/workers")) { "Workers" }
                    @if state.is_read_only() { span.badge { "read-only" } }
                }
                main { (content) }
            }
        }
    }
}

/// A block that htmx reloads (the part of the page under `id`, fetched
/// from `path`) when the server says the queue changed, or every few
/// seconds in poll-only mode.
pub(crate) fn live(state: &WebState, id: &str, path: &str, content: Markup) -> Markup {
    let trigger = if state.is_poll_only() {
        format!("every {}s", crate::REFRESH_SECONDS)
    } else {
        format!("sse:{}", crate::live::REFRESH_EVENT)
    };
    html! {
        div id=(id) hx-get=(state.href(path)) hx-trigger=(trigger) hx-select={ "#" (id) } hx-swap="outerHTML" hx-disinherit="hx-select hx-swap" {
            (content)
        }
    }
}

/// A form that posts an action, with the CSRF token for browsers without
/// htmx.
pub(crate) fn action(state: &WebState, path: &str, label: &str, confirm: Option<&str>) -> Markup {
    html! {
        form.inline method="post" action=(state.href(path)) hx-confirm=[confirm] {
            input type="hidden" name="csrf" value=(state.csrf_token());
            button type="submit" { (label) }
        }
    }
}

/// A count of `sluice::queue_stats`: the number alone when exact; marked
/// "≥" (counted up to the cap and stopped) or "≈" (estimated past the cap)
/// otherwise, with what the mark means on hover.
pub(crate) fn count(n: i64, accuracy: Accuracy) -> Markup {
    let why = match accuracy {
        Accuracy::Exact => return html! { (n) },
        Accuracy::AtLeast => format!(
            "counted up to {} and stopped: at least this many (no estimate: the table was never analyzed, or not since it grew)",
            sluice::STATS_COUNT_CAP
        ),
        _ => format!(
            "counted up to {} and stopped: estimated from the planner's statistics (as of the last ANALYZE)",
            sluice::STATS_COUNT_CAP
        ),
    };
    html! { abbr.inexact title=(why) { (accuracy.mark()) " " (n) } }
}

/// The sum of a count over `consumers`, exact only when each part is; "≥"
/// when the inexact parts are all lower bounds, else "≈".
pub(crate) fn sum(consumers: &[&ConsumerStats], figure: Figure) -> Markup {
    let n = consumers.iter().map(|c| c.count(figure)).sum();
    let parts: Vec<Accuracy> = consumers.iter().map(|c| c.accuracy(figure)).collect();
    let accuracy = if parts.contains(&Accuracy::Estimated) {
        Accuracy::Estimated
    } else if parts.contains(&Accuracy::AtLeast) {
        Accuracy::AtLeast
    } else {
        Accuracy::Exact
    };
    count(n, accuracy)
}

/// "3m 12s ago", from a time.
pub(crate) fn ago(at: DateTime<Utc>) -> String {
    let seconds = (Utc::now() - at).num_seconds().max(0) as u64;
    format!("{} ago", span(Duration::from_secs(seconds)))
}

/// A duration, rounded to seconds ("1h 5m").
pub(crate) fn span(d: Duration) -> String {
    if d.as_millis() < 1000 && !d.is_zero() {
        return format!("{}ms", d.as_millis());
    }
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// A time as UTC, to the second.
pub(crate) fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A path segment, percent-encoded (names are plain, but be safe).
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path of a consumer's pages.
pub(crate) fn consumer_path(stream: &str, consumer: &str) -> String {
    format!("/streams/{}/consumers/{}", seg(stream), seg(consumer))
}
