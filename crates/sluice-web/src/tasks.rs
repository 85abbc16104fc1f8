//! A consumer's tasks: the filtered list paged by cursor, and retry, cancel
//! or discard of every task the filter selects, confirmed with their count.

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use sluice::TaskAction as Action;
use sluice::{Task, TaskState};

use crate::error::{render, PageResult, WebError};
use crate::filter::FilterForm;
use crate::layout::{self, consumer_path};
use crate::WebState;

/// Tasks per page.
pub(crate) const PAGE: usize = 50;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ListQuery {
    #[serde(flatten)]
    filter: FilterForm,
    after: String,
}

pub(crate) async fn page(
    State(state): State<WebState>,
    Path((stream, consumer)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
) -> Response {
    let result = list(&state, &stream, &consumer, &query.filter, &query.after).await;
    render(&state, result)
}

/// The list page: 400 with each error next to its field when the filter or
/// the cursor is bad, and then nothing is listed.
async fn list(state: &WebState, stream: &str, name: &str, form: &FilterForm, after: &str) -> PageResult {
    sluice::get_consumer(state.pool(), stream, name).await?;
    let path = consumer_path(stream, name);
    let checked = form.check(state.payloads_hidden());
    let mut errors = checked.errors;
    let after = after.trim();
    if !after.is_empty() && after.parse::<u64>().is_err() {
        errors.insert("after", format!("{after:?} is not a page cursor: use the page links"));
    }
    let page = if errors.is_empty() {
        let after = (!after.is_empty()).then_some(after);
        Some(sluice::list_tasks(state.pool(), stream, name, &checked.filter, PAGE, after).await?)
    } else {
        None
    };
    let query = form.query();
    let content = html! {
        h1 { "Tasks of " a href=(state.href(&path)) { (name) } " (stream " (stream) ")" }
        form.filters method="get" action=(state.href(&format!("{path}/tasks"))) {
            (form.fields(&errors, state.payloads_hidden()))
            button type="submit" { "Filter" }
            " " a href=(state.href(&format!("{path}/tasks"))) { "clear" }
        }
        @if let Some(e) = errors.get("after") { p.field-error #error-after { (e) } }
        @match &page {
            None => p.error { "Fix the filter to see tasks; nothing was listed or changed." },
            Some(page) => {
                @if !state.is_read_only() {
                    p #bulk { "Every task matching " (form.describe()) ": "
                        @for (action, label) in [("retry", "retry"), ("cancel", "cancel"), ("discard", "discard")] {
                            a href=(state.href(&format!("{path}/bulk/{action}?{query}"))) { (label) "…" } " "
                        }
                    }
                }
                @if page.tasks.is_empty() {
                    p #no-tasks { "No tasks match." }
                } @else {
                    // Not refreshed by polling: it would clear the boxes ticked.
                    @let table = html! {
                        table #tasks {
                            tr {
                                @if !state.is_read_only() { th {} }
                                th { "event" } th { "subject" } th { "state" } th.n { "priority" } th.n { "attempt" }
                                th { "created" } th { "due" } th { "last error" }
                            }
                            @for t in &page.tasks { (row(state, &path, t)) }
                        }
                    };
                    @if state.is_read_only() {
                        (table)
                    } @else {
                        form #selected method="post" action=(state.href(&format!("{path}/selected/retry"))) {
                            input type="hidden" name="csrf" value=(state.csrf_token());
                            (table)
                            p { "Selected tasks: "
                                @for a in Action::ALL {
                                    button type="submit" formaction=(state.href(&format!("{path}/selected/{}", a.name())))
                                        hx-confirm={ (a.name()) " the selected tasks?" } { (a.name()) } " "
                                }
                            }
                        }
                    }
                }
                p.paging {
                    @if !after.is_empty() { a href=(state.href(&format!("{path}/tasks?{query}"))) { "first page" } " " }
                    @if let Some(next) = &page.next {
                        a #next-page href=(state.href(&format!("{path}/tasks?{query}&after={next}"))) { "next page" }
                    }
                }
            }
        }
    };
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    Ok((status, layout::page(state, &format!("Tasks of {name}"), content)).into_response())
}

fn row(state: &WebState, path: &str, t: &Task) -> maud::Markup {
    let last_error = t.errors.last().and_then(|e| e.get("error")).and_then(|e| e.as_str()).unwrap_or("");
    let short: String = last_error.chars().take(120).collect();
    html! {
        tr {
            @if !state.is_read_only() { td { input type="checkbox" name="event" value=(t.event_id); } }
            td { a href=(state.href(&format!("{path}/tasks/{}", t.event_id))) { (t.event_id) } }
            td { (t.subject) }
            td { span class={ "badge " (t.state) } { (t.state) } }
            td.n { (t.priority.get()) }
            td.n { (t.attempt) }
            td { (layout::ago(t.created_at)) }
            td { @if let Some(at) = t.schedule_at { (layout::time(at)) } }
            td { (short) @if short.len() < last_error.len() { "…" } }
        }
    }
}

/// An action named in a URL, or the 404 that says there is none.
pub(crate) fn parse_action(name: &str) -> Result<Action, WebError> {
    name.parse()
        .map_err(|_| WebError::NotFound(format!("no action {name:?}: the actions are retry, cancel and discard")))
}

pub(crate) async fn confirm(
    State(state): State<WebState>,
    Path((stream, consumer, action)): Path<(String, String, String)>,
    Query(form): Query<FilterForm>,
) -> Response {
    let result = confirmation(&state, &stream, &consumer, &action, &form).await;
    render(&state, result)
}

async fn confirmation(state: &WebState, stream: &str, name: &str, action: &str, form: &FilterForm) -> PageResult {
    let action = parse_action(action)?;
    sluice::get_consumer(state.pool(), stream, name).await?;
    let checked = form.check(state.payloads_hidden());
    if !checked.errors.is_empty() {
        return list(state, stream, name, form, "").await;
    }
    let counts = sluice::count_tasks(state.pool(), stream, name, &checked.filter).await?;
    let taken: Vec<(TaskState, i64)> =
        counts.into_iter().filter(|(s, n)| *n > 0 && action.takes(&checked.filter).contains(s)).collect();
    let total: i64 = taken.iter().map(|(_, n)| n).sum();
    let path = consumer_path(stream, name);
    let from = action.applies_to_list();
    let content = html! {
        h1 { "Confirm: " (action.name()) " tasks of " (name) }
        p { "Filter: " (form.describe()) ". Only " (from) " tasks can be " (action.past()) "." }
        @if total == 0 {
            p #count { "No tasks match: there is nothing to " (action.name()) "." }
        } @else {
            p #count {
                strong { (total) " " @if total == 1 { "task" } @else { "tasks" } } " will be " (action.past())
                " (" @for (i, (s, n)) in taken.iter().enumerate() { @if i > 0 { ", " } (n) " " (s) } ")."
            }
            form method="post" action=(state.href(&format!("{path}/bulk/{}", action.name()))) {
                input type="hidden" name="csrf" value=(state.csrf_token());
                (form.hidden())
                label { "Reason (kept in each task's log) " input type="text" name="reason"; }
                " " button type="submit" { (action.name()) " " (total) }
            }
        }
        p { a href=(state.href(&format!("{path}/tasks?{}", form.query()))) { "Back to the tasks" } }
    };
    Ok(layout::page(state, "Confirm", content).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct BulkForm {
    #[serde(flatten)]
    filter: FilterForm,
    reason: String,
}

pub(crate) async fn act_on_all(
    State(state): State<WebState>,
    Path((stream, consumer, action)): Path<(String, String, String)>,
    form: Result<Form<BulkForm>, FormRejection>,
) -> Response {
    let form = form.map(|Form(f)| f).unwrap_or_default();
    let result = bulk(&state, &stream, &consumer, &action, &form).await;
    render(&state, result)
}

async fn bulk(state: &WebState, stream: &str, name: &str, action: &str, form: &BulkForm) -> PageResult {
    let action = parse_action(action)?;
    let checked = form.filter.check(state.payloads_hidden());
    if !checked.errors.is_empty() {
        return list(state, stream, name, &form.filter, "").await;
    }
    let reason = Some(form.reason.trim()).filter(|r| !r.is_empty());
    let (pool, filter) = (state.pool(), &checked.filter);
    let steered = sluice::steer_tasks(pool, action, stream, name, filter, reason).await?;
    let n = steered.changed.len();
    let path = consumer_path(stream, name);
    let content = html! {
        h1 { "Done" }
        p #done { (n) " " @if n == 1 { "task" } @else { "tasks" } " " (action.past()) " (" (form.filter.describe()) ")." }
        p { a href=(state.href(&format!("{path}/tasks?{}", form.filter.query()))) { "Back to the tasks" } }
    };
    Ok(layout::page(state, "Done", content).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PickQuery {
    consumer: String,
    #[serde(flatten)]
    filter: FilterForm,
}

/// `/tasks`: choose a consumer (tasks belong to one), then its list with
/// the same filter.
pub(crate) async fn pick(State(state): State<WebState>, Query(query): Query<PickQuery>) -> Response {
    let result = picker(&state, &query).await;
    render(&state, result)
}

async fn picker(state: &WebState, query: &PickQuery) -> PageResult {
    let chosen = query.consumer.trim();
    let mut errors = std::collections::BTreeMap::new();
    if !chosen.is_empty() {
        match chosen.split_once('/') {
            Some((stream, name)) => {
                sluice::get_consumer(state.pool(), stream, name).await?;
                let target = format!("{}/tasks?{}", consumer_path(stream, name), query.filter.query());
                return Ok(axum::response::Redirect::to(&state.href(&target)).into_response());
            }
            None => {
                errors.insert("consumer", format!("{chosen:?} is not STREAM/CONSUMER"));
            }
        }
    }
    let consumers = sluice::list_consumers(state.pool(), None).await?;
    let content = html! {
        h1 { "Tasks" }
        @if consumers.is_empty() {
            p { "No consumers yet: tasks belong to a consumer." }
        } @else {
            form.filters method="get" action=(state.href("/tasks")) {
                label { "Consumer "
                    select name="consumer" {
                        @for c in &consumers {
                            @let value = format!("{}/{}", c.stream, c.name);
                            option value=(value) selected[value == chosen] { (c.name) " (stream " (c.stream) ")" }
                        }
                    }
                    @if let Some(e) = errors.get("consumer") { span.field-error #error-consumer { (e) } }
                }
                (query.filter.fields(&query.filter.check(state.payloads_hidden()).errors, state.payloads_hidden()))
                button type="submit" { "Show tasks" }
            }
        }
    };
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    Ok((status, layout::page(state, "Tasks", content)).into_response())
}

/// Retry, cancel or discard the tasks ticked in the list (`event` fields).
pub(crate) async fn act_on_selected(
    State(state): State<WebState>,
    Path((stream, consumer, action)): Path<(String, String, String)>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let fields = form.map(|Form(f)| f).unwrap_or_default();
    let result = selected(&state, &stream, &consumer, &action, &fields).await;
    render(&state, result)
}

async fn selected(state: &WebState, stream: &str, name: &str, action: &str, fields: &[(String, String)]) -> PageResult {
    let action = parse_action(action)?;
    sluice::get_consumer(state.pool(), stream, name).await?;
    let path = consumer_path(stream, name);
    let mut ids = Vec::new();
    let mut refused = None;
    for (_, value) in fields.iter().filter(|(k, _)| k == "event") {
        match value.parse::<i64>() {
            Ok(id) if id > 0 => ids.push(sluice::EventId(id)),
            _ => refused = Some(format!("{value:?} is not an event id; nothing was changed")),
        }
    }
    if ids.is_empty() && refused.is_none() {
        refused = Some("no task was selected; nothing was changed".to_string());
    }
    if let Some(reason) = refused {
        let content = html! {
            h1 { "Nothing changed" }
            p.error #selection-error { (reason) }
            p { a href=(state.href(&format!("{path}/tasks"))) { "Back to the tasks" } }
        };
        return Ok((StatusCode::BAD_REQUEST, layout::page(state, "Nothing changed", content)).into_response());
    }
    let filter = sluice::TaskFilter::default().events(ids.iter().copied());
    let pool = state.pool();
    let steered = sluice::steer_tasks(pool, action, stream, name, &filter, None).await?;
    let (n, asked) = (steered.changed.len(), ids.len());
    let from = action.applies_to_list();
    let content = html! {
        h1 { "Done" }
        p #done { (n) " of " (asked) " selected " @if asked == 1 { "task" } @else { "tasks" } " " (action.past()) "." }
        @if n < asked { p { "The others were not " (from) ", so they were left alone." } }
        p { a href=(state.href(&format!("{path}/tasks"))) { "Back to the tasks" } }
    };
    Ok(layout::page(state, "Done", content).into_response())
}
