//! The workers: every subscriber, its host, pid, status, heartbeat and
//! tasks; and the gateway's clients, with theirs.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use sluice::{GatewayClient, Worker};

use crate::error::{render, PageResult};
use crate::layout::{self, consumer_path};
use crate::WebState;

pub(crate) async fn page(State(state): State<WebState>) -> Response {
    let result = view(&state).await;
    render(&state, result)
}

async fn view(state: &WebState) -> PageResult {
    let workers = sluice::list_workers(state.pool(), None, None).await?;
    let clients = sluice::list_gateway_clients(state.pool()).await?;
    let content = html! {
        h1 { "Workers" }
        (layout::live(state, "workers", "/workers", html! {
            (table(state, &workers, true))
            h2 { "Gateway clients" }
            (clients_table(&clients))
        }))
    };
    Ok(layout::page(state, "Workers", content).into_response())
}

/// A table of workers; with `show_consumer`, which consumer each works for.
pub(crate) fn table(state: &WebState, workers: &[Worker], show_consumer: bool) -> Markup {
    html! {
        @if workers.is_empty() {
            p { "No workers connected." }
        } @else {
            table #worker-list {
                tr {
                    @if show_consumer { th { "stream" } th { "consumer" } }
                    th { "host" } th.n { "pid" } th { "status" } th { "heartbeat" } th.n { "tasks held" }
                    th.n { "done/min" } th.n { "failed/min" } th { "started" } th { "id" }
                }
                @for w in workers {
                    tr {
                        @if show_consumer {
                            td { (w.stream) }
                            td { a href=(state.href(&consumer_path(&w.stream, &w.consumer))) { (w.consumer) } }
                        }
                        td { (w.host) } td.n { (w.pid) }
                        td { span class={ "badge " (w.status) } { (w.status) } }
                        td { (layout::span(Duration::from_millis(w.heartbeat_age_ms.max(0) as u64))) " ago" }
                        td.n { (w.tasks_held) }
                        td.n { (w.completed_last_minute) } td.n { (w.failed_last_minute) }
                        td { (layout::ago(w.started_at)) }
                        td { code { (w.id) } }
                    }
                }
            }
        }
    }
}

/// The gateway's clients: connected ones, then those that left in the last day.
fn clients_table(clients: &[GatewayClient]) -> Markup {
    html! {
        @if clients.is_empty() {
            p { "No gateway client in the last day." }
        } @else {
            table #gateway-clients {
                tr {
                    th { "key" } th { "client" } th { "status" } th.n { "subscriptions" } th.n { "credit" }
                    th.n { "in hand" } th { "connected" } th { "last seen" } th { "gateway" }
                }
                @for c in clients {
                    tr {
                        td { (c.key_name) } td { (c.client.as_deref().unwrap_or("")) }
                        td { span class={ "badge " (c.status) } { (c.status) } }
                        td.n { (c.subscriptions) } td.n { (c.credit) } td.n { (c.in_flight) }
                        td { (layout::ago(c.connected_at)) }
                        td { (layout::ago(c.disconnected_at.unwrap_or(c.seen_at))) }
                        td { (c.host) " · " (c.pid) }
                    }
                }
            }
        }
    }
}
