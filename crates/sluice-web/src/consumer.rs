//! A consumer: its settings, position and lag, pause and resume, its workers.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

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
    let path = consumer_path(stream, name);
    let s = stats.consumers.into_iter().find(|s| s.stream == stream && s.consumer == name);
    let content = html! {
        h1 { "Consumer " (consumer.name) " of stream "
            a href=(state.href(&format!("/streams/{}", layout::seg(stream)))) { (consumer.stream) } }
        (layout::live(state, "consumer", &path, html! {
            p #status {
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
                    tr { th { "events in the stream" } td.n { (s.events) } }
                    tr { th { "not yet materialized (lag)" } td.n { (s.lag_events) } }
                    tr { th { "oldest not materialized" } td { @if let Some(at) = s.lag_oldest_at { (layout::ago(at)) } @else { "—" } } }
                    tr { th { "oldest available task" } td { @if let Some(at) = s.oldest_available_at { (layout::ago(at)) } @else { "—" } } }
                    tr { th { "completed / failed in the last minute" } td { (s.completed_last_minute) " / " (s.failed_last_minute) } }
                }
                h2 { "Tasks by state" }
                table #tasks-by-state {
                    tr {
                        @for state_name in ["scheduled", "available", "running", "completed", "discarded", "cancelled"] {
                            th { a href=(state.href(&format!("{path}/tasks?state={state_name}"))) { (state_name) } }
                        }
                    }
                    tr { @for n in [s.scheduled, s.available, s.running, s.completed, s.discarded, s.cancelled] { td.n { (n) } } }
                }
            }
            p { a href=(state.href(&format!("{path}/tasks"))) { "All tasks" } }
            h2 { "Workers" }
            (workers::table(state, &workers, false))
        }))
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
