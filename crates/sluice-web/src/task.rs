//! One task: its state, its event, every attempt's error, its log, and
//! retry, cancel or discard.

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use sluice::{EventId, TaskState};

use crate::error::{render, PageResult, WebError};
use crate::layout::{self, consumer_path};
use crate::tasks::parse_action;
use crate::WebState;
use sluice::TaskAction as Action;

fn event_id(raw: &str) -> Result<EventId, WebError> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(EventId)
        .ok_or_else(|| WebError::NotFound(format!("no task for event {raw:?}: an event id is a positive number")))
}

pub(crate) async fn page(
    State(state): State<WebState>,
    Path((stream, consumer, event)): Path<(String, String, String)>,
) -> Response {
    let result = view(&state, &stream, &consumer, &event).await;
    render(&state, result)
}

async fn view(state: &WebState, stream: &str, name: &str, event: &str) -> PageResult {
    let id = event_id(event)?;
    let pool = state.pool();
    let task = match sluice::get_task(pool, stream, name, id).await {
        Ok(task) => task,
        Err(e @ sluice::Error::TaskNotFound { .. }) => return gone(state, stream, name, id, e).await,
        Err(e) => return Err(e.into()),
    };
    let event = sluice::task_event(pool, stream, name, id).await?;
    let log = sluice::task_log(pool, stream, name, id).await?;
    let path = consumer_path(stream, name);
    let task_path = format!("{path}/tasks/{id}");
    let actions: &[Action] = match task.state {
        TaskState::Discarded => &[Action::Retry, Action::Cancel],
        TaskState::Cancelled => &[Action::Retry],
        TaskState::Available | TaskState::Scheduled | TaskState::Waiting => &[Action::Cancel, Action::Discard],
        _ => &[],
    };
    let content = html! {
        h1 { "Task of event " (id) }
        p { "Consumer " a href=(state.href(&path)) { (name) } " of stream " (stream) " · "
            a href=(state.href(&format!("{path}/tasks"))) { "all its tasks" } }
        table #task {
            tr { th { "state" } td { span #state class={ "badge " (task.state) } { (task.state) } } }
            tr { th { "subject" } td { (task.subject) } }
            tr { th { "priority" } td { (task.priority.get()) } }
            tr { th { "attempt" } td { (task.attempt) } }
            tr { th { "created" } td { (layout::time(task.created_at)) } }
            @if let Some(at) = task.schedule_at { tr { th { "due" } td { (layout::time(at)) } } }
            @if let Some(at) = task.lease_until { tr { th { "lease until" } td { (layout::time(at)) } } }
            @if let Some(w) = task.worker_id { tr { th { "worker" } td { code { (w.0) } } } }
            @if let Some(at) = task.finished_at { tr { th { "finished" } td { (layout::time(at)) } } }
        }
        @if !state.is_read_only() && !actions.is_empty() {
            div #actions {
                @for a in actions {
                    (layout::action(state, &format!("{task_path}/{}", a.name()), a.name(),
                        Some(&format!("{} the task of event {id}?", a.name()))))
                    " "
                }
            }
        }
        h2 { "Event" }
        table #event {
            tr { th { "id" } td { (event.id) } }
            tr { th { "published" } td { (layout::time(event.created_at)) } }
            @if let Some(key) = &event.key { tr { th { "key" } td { (key) } } }
            @if let Some(at) = event.deliver_at { tr { th { "deliver at" } td { (layout::time(at)) } } }
        }
        @if state.payloads_hidden() {
            p #payload { em { "Payload and metadata hidden (hide_payloads)." } }
        } @else {
            h3 { "Payload" }
            pre #payload { (serde_json::to_string_pretty(&event.payload).unwrap_or_default()) }
            @if !event.metadata.is_empty() {
                h3 { "Metadata" }
                table #metadata {
                    @for (k, v) in &event.metadata {
                        tr { th { (k) } td { (v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())) } }
                    }
                }
            }
        }
        h2 { "Errors" }
        @if task.errors.is_empty() {
            p { "No attempt has failed." }
        } @else {
            table #errors {
                tr { th.n { "attempt" } th { "at" } th { "worker" } th { "error" } }
                @for e in &task.errors {
                    tr {
                        td.n { (e.get("attempt").map(|v| v.to_string()).unwrap_or_default()) }
                        td { (e.get("at").and_then(|v| v.as_str()).unwrap_or("")) }
                        td { code { (e.get("worker").and_then(|v| v.as_str()).unwrap_or("")) } }
                        td { pre { (e.get("error").and_then(|v| v.as_str()).map(str::to_string).unwrap_or_else(|| e.to_string())) } }
                    }
                }
            }
        }
        h2 { "Log" }
        (log_table(&log))
    };
    Ok(layout::page(state, &format!("Task {id}"), content).into_response())
}

/// A task that is no longer stored but whose log is: a 404 that says why
/// (completed tasks are deleted on ack by default) and shows the log. With
/// no log either, the plain 404.
async fn gone(state: &WebState, stream: &str, name: &str, id: EventId, missing: sluice::Error) -> PageResult {
    let log = sluice::task_log(state.pool(), stream, name, id).await?;
    if log.is_empty() {
        return Err(missing.into());
    }
    let consumer = sluice::get_consumer(state.pool(), stream, name).await?;
    let path = consumer_path(stream, name);
    let content = html! {
        h1 { "Task of event " (id) }
        p #gone.error {
            "The task is no longer stored. A completed task is deleted "
            @if consumer.completed_retention.is_zero() { "when it is acked" }
            @else { (layout::span(consumer.completed_retention)) " after it completes" }
            ", a dead letter or cancelled task " (layout::span(consumer.dead_retention)) " after it ends; "
            "its log is kept for " (layout::span(consumer.log_retention)) "."
        }
        p { "Consumer " a href=(state.href(&path)) { (name) } " of stream " (stream) " · "
            a href=(state.href(&format!("{path}/tasks"))) { "all its tasks" } }
        h2 { "Log" }
        (log_table(&log))
    };
    Ok((StatusCode::NOT_FOUND, layout::page(state, &format!("Task {id}"), content)).into_response())
}

fn log_table(log: &[sluice::TaskLogEntry]) -> maud::Markup {
    html! {
        @if log.is_empty() {
            p { "Nothing logged." }
        } @else {
            table #log {
                tr { th { "at" } th.n { "attempt" } th { "action" } th { "reason" } th.n { "priority" } th { "due" } th { "worker" } }
                @for entry in log {
                    tr {
                        td { (layout::time(entry.created_at)) }
                        td.n { (entry.attempt) }
                        td { (entry.action) }
                        td { (entry.reason.as_deref().unwrap_or("")) }
                        td.n { @if let Some(p) = entry.priority { (p) } }
                        td { @if let Some(at) = entry.schedule_at { (layout::time(at)) } }
                        td { @if let Some(w) = entry.worker_id { code { (w) } } }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ReasonForm {
    reason: String,
}

pub(crate) async fn act(
    State(state): State<WebState>,
    Path((stream, consumer, event, action)): Path<(String, String, String, String)>,
    form: Result<Form<ReasonForm>, FormRejection>,
) -> Response {
    let form = form.map(|Form(f)| f).unwrap_or_default();
    let result = steer(&state, &stream, &consumer, &event, &action, &form).await;
    render(&state, result)
}

async fn steer(state: &WebState, stream: &str, name: &str, event: &str, action: &str, form: &ReasonForm) -> PageResult {
    let action = parse_action(action)?;
    let id = event_id(event)?;
    let reason = Some(form.reason.trim()).filter(|r| !r.is_empty());
    let pool = state.pool();
    let done = sluice::steer_task(pool, action, stream, name, id, reason).await;
    match done {
        Ok(()) => Ok(Redirect::to(&state.href(&format!("{}/tasks/{id}", consumer_path(stream, name)))).into_response()),
        Err(e @ sluice::Error::TaskState { .. }) => {
            Ok(crate::error::page(state, StatusCode::CONFLICT, "Nothing changed", &e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}
