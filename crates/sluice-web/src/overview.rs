//! The overview (every stream and consumer, tasks by state, workers by
//! status, dead letters) and a stream's page.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use sluice::{ConsumerStats, Figure};

use crate::chart;
use crate::error::{render, PageResult};
use crate::layout::{self, consumer_path, seg};
use crate::WebState;

pub(crate) async fn page(State(state): State<WebState>) -> Response {
    let result = overview(&state).await;
    render(&state, result)
}

async fn overview(state: &WebState) -> PageResult {
    let streams = sluice::list_streams(state.pool()).await?;
    let stats = sluice::queue_stats(state.pool(), None, None).await?;
    let hour = sluice::throughput(state.pool(), None, None, chart::MINUTES).await?;
    let c = &stats.consumers;
    let all: Vec<&ConsumerStats> = c.iter().collect();
    let sum = |f: fn(&ConsumerStats) -> i64| c.iter().map(f).sum::<i64>();
    let dead = sum(|s| s.discarded);
    let content = html! {
        h1 { "Overview" }
        (layout::live(state, "overview", "/", html! {
            p {
                "Dead letters: "
                strong #dead-letters { (layout::sum(&all, Figure::Discarded)) }
                @if dead > 0 { " (discarded tasks; open a consumer's dead letters below to retry them)" }
            }
            h2 { "Throughput" }
            (chart::throughput("throughput", &hour))
            h2 { "Tasks by state" }
            table #tasks-by-state {
                tr { th { "scheduled" } th { "waiting" } th { "available" } th { "running" } th { "completed" } th { "discarded" } th { "cancelled" } }
                tr { @for figure in Figure::TASK_STATES { td.n { (layout::sum(&all, figure)) } } }
            }
            h2 { "Workers by status" }
            table #workers-by-status {
                tr { th { "active" } th { "idle" } th { "stopping" } th { "gone" } }
                tr {
                    td.n { (sum(|s| s.workers_active)) } td.n { (sum(|s| s.workers_idle)) }
                    td.n { (sum(|s| s.workers_stopping)) } td.n { (sum(|s| s.workers_gone)) }
                }
            }
            h2 { "Consumers" }
            (consumers_table(state, c))
            h2 { "Streams" }
            @if streams.is_empty() {
                p { "No streams yet." }
            } @else {
                table #streams {
                    tr { th { "stream" } th.n { "events" } th { "event retention" } th.n { "consumers" } }
                    @for stream in &streams {
                        @let mine: Vec<&ConsumerStats> = c.iter().filter(|s| s.stream == stream.name).collect();
                        tr {
                            td { a href=(state.href(&format!("/streams/{}", seg(&stream.name)))) { (stream.name) } }
                            // Counted per consumer; a stream without one shows none.
                            td.n { @if let Some(s) = mine.first() { (layout::count(s.events, s.accuracy(Figure::Events))) } @else { "—" } }
                            td { (layout::span(stream.event_retention)) }
                            td.n { (mine.len()) }
                        }
                    }
                }
            }
        }))
    };
    Ok(layout::page(state, "Overview", content).into_response())
}

/// Consumers with their lag, tasks by state and workers.
pub(crate) fn consumers_table(state: &WebState, consumers: &[ConsumerStats]) -> Markup {
    html! {
        @if consumers.is_empty() {
            p { "No consumers yet." }
        } @else {
            table #consumers {
                tr {
                    th { "stream" } th { "consumer" } th.n { "lag (events)" } th { "oldest unseen" }
                    th.n { "available" } th.n { "scheduled" } th.n { "running" } th.n { "dead letters" }
                    th.n { "done/min" } th.n { "failed/min" } th.n { "workers" }
                }
                @for s in consumers {
                    @let path = consumer_path(&s.stream, &s.consumer);
                    tr {
                        td { (s.stream) }
                        td {
                            a href=(state.href(&path)) { (s.consumer) }
                            @if s.paused { " " span.badge.paused { "paused" } }
                        }
                        td.n { (layout::count(s.lag_events, s.accuracy(Figure::LagEvents))) }
                        td { @if let Some(at) = s.lag_oldest_at { (layout::ago(at)) } }
                        @for figure in [Figure::Available, Figure::Scheduled, Figure::Running] {
                            td.n { (layout::count(s.count(figure), s.accuracy(figure))) }
                        }
                        td.n {
                            @if s.discarded > 0 {
                                a href=(state.href(&format!("{path}/tasks?state=discarded"))) {
                                    (layout::count(s.discarded, s.accuracy(Figure::Discarded)))
                                }
                            } @else { "0" }
                        }
                        td.n { (s.completed_last_minute) } td.n { (s.failed_last_minute) }
                        td.n { (s.workers_active + s.workers_idle + s.workers_stopping) }
                    }
                }
            }
        }
    }
}

pub(crate) async fn stream_page(State(state): State<WebState>, Path(stream): Path<String>) -> Response {
    let result = stream_view(&state, &stream).await;
    render(&state, result)
}

async fn stream_view(state: &WebState, name: &str) -> PageResult {
    let stream = sluice::get_stream(state.pool(), name).await?;
    let stats = sluice::queue_stats(state.pool(), Some(name), None).await?;
    let content = html! {
        h1 { "Stream " (stream.name) }
        table #settings {
            tr { th { "event retention" } td { (layout::span(stream.event_retention)) } }
            tr { th { "created" } td { (layout::time(stream.created_at)) } }
        }
        h2 { "Consumers" }
        (layout::live(state, "stream-consumers", &format!("/streams/{}", seg(name)), consumers_table(state, &stats.consumers)))
    };
    Ok(layout::page(state, &format!("Stream {}", stream.name), content).into_response())
}
