//! One module per scenario. Each takes the run's context and returns a
//! [`Report`]; none of them prints results itself.

use crate::cli::{Params, Scenario};
use crate::db::BenchDb;
use crate::report::{Output, Report};

mod drain;
mod fifo;
mod gateway;
mod idle;
mod latency;
mod pinned;
mod pressure;
mod publish;
mod scale;
mod selective;
mod single;
mod soak;

/// What every scenario gets.
pub struct Ctx<'a> {
    pub db: &'a BenchDb,
    pub params: &'a Params,
    pub out: &'a Output,
}

pub async fn run(scenario: Scenario, ctx: &Ctx<'_>) -> anyhow::Result<Report> {
    match scenario {
        Scenario::Publish => publish::run(ctx).await,
        Scenario::Single => single::run(ctx).await,
        Scenario::Drain => drain::run(ctx).await,
        Scenario::Latency => latency::run(ctx).await,
        Scenario::Soak => soak::run(ctx).await,
        Scenario::Pinned => pinned::run(ctx).await,
        Scenario::Scale => scale::run(ctx).await,
        Scenario::Idle => idle::run(ctx).await,
        Scenario::Selective => selective::run(ctx).await,
        Scenario::Pressure => pressure::run(ctx).await,
        Scenario::Gateway => gateway::run(ctx).await,
        Scenario::Fifo => fifo::run(ctx).await,
        Scenario::All => unreachable!("`all` is expanded when the options are read"),
    }
}
