//! A consumer: its settings, position and lag, pause and resume, its workers.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use sluice::Figure;

use crate::error::{render, PageResult};
use crate::layout::{self, consumer_path};
use crate::{workers, WebState};

pub(crate) async fn page(State(state): State<WebState>, Path((stream, consumer)): Path<(String, String)>) -> Response {
    let result = view(&state, &stream, &consumer).await;
    render(&state, result)
}

async fn view(state: &WebState, stream: &str, name: &str) -> PageResult {
    let consumer = sluice::get_consumer(state.pool(), stream, name).await?;
    let stats = sluice::queue_stats(state.pool(), Some(stream), Some(name)).await?;
    let workers = sluice::list_workers(state.pool(), Some(stream), Some(name)).await?;
    let hour = sluice::throughput(state.pool(), Some(stream), Some(name), crate::chart::MINUTES).await?;
    let path = consumer_path(stream, name);
    let s = stats.consumers.into_iter().find(|s| s.stream == stream && s.consumer == name);
    let content = html! {
        h1 { "Consumer " (consumer.name) " of stream "
            a href=(state.href(&format!("/streams/{}", layout::seg(stream)))) { (consumer.stream) } }
        (layout::live(state, "consumer", &path, html! {
            div #status {
                @if consumer.paused {
                    span.badge.paused { "paused" } " — workers claim nothing until it is resumed. "
                    @if !state.is_read_only() { (layout::action(state, &format!("{path}/resume"), "Resume", None)) }
                } @else {
                    span.badge.active { "running" } " "
                    @if !state.is_read_only() {
                        (layout::action(state, &format!("{path}/pause"), "Pause",
                            Some("Pause this consumer? Its workers will stop claiming tasks.")))
                    }
                }
            }
            h2 { "Position and lag" }
            @if let Some(s) = &s {
                table #lag {
                    tr { th { "events in the stream" } td.n { (layout::count(s.events, s.accuracy(Figure::Events))) } }
                    tr { th { "not yet materialized (lag)" } td.n { (layout::count(s.lag_events, s.accuracy(Figure::LagEvents))) } }
                    tr { th { "oldest not materialized" } td { @if let Some(at) = s.lag_oldest_at { (layout::ago(at)) } @else { "—" } } }
                    tr { th { "oldest available task" } td { @if let Some(at) = s.oldest_available_at { (layout::ago(at)) } @else { "—" } } }
                    tr { th { "completed / failed in the last minute" } td { (s.completed_last_minute) " / " (s.failed_last_minute) } }
                }
                h2 { "Throughput" }
                (crate::chart::throughput("throughput", &hour))
                h2 { "Tasks by state" }
                table #tasks-by-state {
                    tr {
                        @for state_name in ["scheduled", "waiting", "available", "running", "completed", "discarded", "cancelled"] {
                            th { a href=(state.href(&format!("{path}/tasks?state={state_name}"))) { (state_name) } }
                        }
                    }
                    tr { @for figure in Figure::TASK_STATES { td.n { (layout::count(s.count(figure), s.accuracy(figure))) } } }
                }
            }
            p { a href=(state.href(&format!("{path}/tasks"))) { "All tasks" } }
            h2 { "Workers" }
            (workers::table(state, &workers, false))
        }))
        @if !state.is_read_only() {
            form.filters method="get" action=(state.href(&format!("{path}/reset"))) {
                label { "Replay from "
                    input type="text" name="to" placeholder="beginning, now, an event id or 2026-12-01T09:00:00Z";
                }
                button type="submit" { "Reset position…" }
            }
        }
        h2 { "Settings" }
        table #settings {
            tr { th { "include" } td { @if consumer.include.is_empty() { "every subject" } @else { (consumer.include.join(", ")) } } }
            tr { th { "exclude" } td { (consumer.exclude.join(", ")) } }
            tr { th { "max attempts" } td { (consumer.max_attempts) } }
            tr { th { "backoff" } td { (layout::span(consumer.backoff_initial)) " to " (layout::span(consumer.backoff_max)) } }
            tr { th { "lease" } td { (layout::span(consumer.lease)) } }
            tr { th { "completed kept" } td { (layout::span(consumer.completed_retention)) } }
            tr { th { "dead letters kept" } td { (layout::span(consumer.dead_retention)) } }
            tr { th { "log kept" } td { (layout::span(consumer.log_retention)) } }
            @if let Some(at) = consumer.start_from { tr { th { "starts from" } td { (layout::time(at)) } } }
            tr { th { "created" } td { (layout::time(consumer.created_at)) } }
        }
    };
    Ok(layout::page(state, &format!("Consumer {name}"), content).into_response())
}

pub(crate) async fn pause(State(state): State<WebState>, Path((stream, consumer)): Path<(String, String)>) -> Response {
    let result = sluice::pause_consumer(state.pool(), &stream, &consumer).await;
    after(&state, &stream, &consumer, result)
}

pub(crate) async fn resume(
    State(state): State<WebState>,
    Path((stream, consumer)): Path<(String, String)>,
) -> Response {
    let result = sluice::resume_consumer(state.pool(), &stream, &consumer).await;
    after(&state, &stream, &consumer, result)
}

/// Back to the consumer's page once done (POST, redirect, GET), or the error's page.
fn after(state: &WebState, stream: &str, consumer: &str, result: Result<sluice::Consumer, sluice::Error>) -> Response {
    match result {
        Ok(_) => Redirect::to(&state.href(&consumer_path(stream, consumer))).into_response(),
        Err(e) => crate::error::WebError::from(e).into_page(state),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct ResetForm {
    to: String,
}

/// `beginning`, `now`, an event id or an RFC 3339 time, as `sluice consumer reset --to` takes.
fn parse_replay(text: &str) -> Result<sluice::Replay, String> {
    let t = text.trim();
    match t {
        "beginning" => Ok(sluice::Replay::Beginning),
        "now" => Ok(sluice::Replay::Now),
        _ if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => match t.parse::<i64>() {
            Ok(id) if id > 0 => Ok(sluice::Replay::Event(sluice::EventId(id))),
            _ => Err(format!("{t:?} is not an event id")),
        },
        _ => chrono::DateTime::parse_from_rfc3339(t).map(|at| sluice::Replay::At(at.to_utc())).map_err(|_| {
            format!("{t:?} is not beginning, now, an event id or an RFC 3339 time (2026-12-01T09:00:00Z)")
        }),
    }
}

pub(crate) async fn confirm_reset(
    State(state): State<WebState>,
    Path((stream, consumer)): Path<(String, String)>,
    axum::extract::Query(form): axum::extract::Query<ResetForm>,
) -> Response {
    let result = reset_page(&state, &stream, &consumer, &form.to, None).await;
    render(&state, result)
}

/// The confirmation that names what a reset replays, or the form with the
/// error next to its field (400).
async fn reset_page(state: &WebState, stream: &str, name: &str, to: &str, error: Option<String>) -> PageResult {
    sluice::get_consumer(state.pool(), stream, name).await?;
    let path = consumer_path(stream, name);
    let replay = match error {
        Some(e) => Err(e),
        None => parse_replay(to),
    };
    let stats = sluice::queue_stats(state.pool(), Some(stream), Some(name)).await?;
    let s = stats.consumers.first();
    let content = html! {
        h1 { "Reset the position of " (name) " (stream " (stream) ")" }
        @match &replay {
            Err(e) => {
                form.filters method="get" action=(state.href(&format!("{path}/reset"))) {
                    label { "Replay from "
                        input type="text" name="to" value=(to) placeholder="beginning, now, an event id or 2026-12-01T09:00:00Z";
                        span.field-error #error-to { (e) }
                    }
                    button type="submit" { "Reset position…" }
                }
                p { "Nothing was changed." }
            }
            Ok(replay) => {
                p #replay { "The consumer will get "
                    @match replay {
                        sluice::Replay::Beginning => { "every event the stream holds ("
                            (s.map(|s| s.events).unwrap_or(0)) " now) again." }
                        sluice::Replay::Now => { "nothing published so far: the "
                            (s.map(|s| s.lag_events).unwrap_or(0)) " events not yet made into tasks are skipped." }
                        sluice::Replay::At(at) => { "the events published since " (layout::time(*at)) " again." }
                        sluice::Replay::Event(id) => { "the events from event " (id) " on again." }
                        _ => { "the events from the new position." }
                    }
                }
                p { "An event whose task was completed comes back as a new task; pending and dead tasks are left as they are." }
                form method="post" action=(state.href(&format!("{path}/reset"))) {
                    input type="hidden" name="csrf" value=(state.csrf_token());
                    input type="hidden" name="to" value=(to.trim());
                    button type="submit" { "Reset position" }
                }
            }
        }
        p { a href=(state.href(&path)) { "Back to the consumer" } }
    };
    let status = if replay.is_ok() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    Ok((status, layout::page(state, "Reset position", content)).into_response())
}

pub(crate) async fn reset(
    State(state): State<WebState>,
    Path((stream, consumer)): Path<(String, String)>,
    form: Result<axum::extract::Form<ResetForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let to = form.map(|f| f.0.to).unwrap_or_default();
    let result = match parse_replay(&to) {
        Err(e) => reset_page(&state, &stream, &consumer, &to, Some(e)).await,
        Ok(replay) => match sluice::reset_position(state.pool(), &stream, &consumer, replay).await {
            Ok(()) => Ok(Redirect::to(&state.href(&consumer_path(&stream, &consumer))).into_response()),
            Err(sluice::Error::Invalid(e)) => reset_page(&state, &stream, &consumer, &to, Some(e.to_string())).await,
            Err(e) => Err(e.into()),
        },
    };
    render(&state, result)
}
