//! `--peers`: runs the peer queues' benchmark (`run-all.sh`, see its README)
//! with the same N as Sluice's drain, and puts its lines beside Sluice's
//! publish and drain figures of this run in one table.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::report::{count, Output, Report};

/// `<workspace>/../shared/peers`.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers")
}

/// One line of run-all.sh:
/// `PEER=<name> N=<n> enqueue_s=<s> process_s=<s> enqueue_per_s=<x> process_per_s=<y>`,
/// or `PEER=<name> N=<n> FAILED (…)`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PeerLine {
    pub peer: String,
    pub n: Option<u64>,
    pub enqueue_per_s: Option<f64>,
    pub process_per_s: Option<f64>,
    pub enqueue_s: Option<f64>,
    pub process_s: Option<f64>,
    pub failed: bool,
    pub line: String,
}

pub fn parse(line: &str) -> Option<PeerLine> {
    let field =
        |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name)?.strip_prefix('=').map(str::to_string));
    let number = |name: &str| field(name).and_then(|v| v.parse::<f64>().ok());
    Some(PeerLine {
        peer: field("PEER")?,
        n: field("N").and_then(|v| v.parse().ok()),
        enqueue_per_s: number("enqueue_per_s"),
        process_per_s: number("process_per_s"),
        enqueue_s: number("enqueue_s"),
        process_s: number("process_s"),
        failed: line.contains("FAILED"),
        line: line.to_string(),
    })
}

/// Runs `<dir>/run-all.sh` with `N=n` (the environment's `PEERS` picks a
/// subset), echoing each line to stderr as it comes.
pub async fn run(dir: &Path, n: u64, out: &Output) -> anyhow::Result<Vec<PeerLine>> {
    let script = dir.join("run-all.sh");
    out.progress(&format!("peers: N={n} {} (installs itself on the first run; takes minutes)", script.display()));
    let mut child = Command::new(&script)
        .env("N", n.to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", script.display()))?;
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let mut peers = Vec::new();
    while let Some(line) = lines.next_line().await? {
        out.progress(&format!("peers: {line}"));
        peers.extend(parse(&line));
    }
    let status = child.wait().await?;
    anyhow::ensure!(status.success() || !peers.is_empty(), "{} failed: {status}", script.display());
    Ok(peers)
}

/// The peers' lines from a saved run-all.sh output (other lines are skipped).
pub fn read(file: &Path) -> anyhow::Result<Vec<PeerLine>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(text.lines().filter(|l| l.starts_with("PEER=")).filter_map(parse).collect())
}

/// Sluice's publish (1 publisher) and drain (1 consumer) of this run, with the peers' lines.
pub fn comparison(peers: &[PeerLine], reports: &[Report], commit: &str) -> Report {
    let find = |scenario: &str| reports.iter().find(|r| r.scenario == scenario).map(|r| &r.results);
    let publish = find("publish").and_then(|r| {
        let runs = r["runs"].as_array()?;
        let one = runs.iter().find(|run| run["publishers"] == 1).or(runs.first())?;
        Some((one["n"].as_u64()?, one["events_per_s"].as_f64()?))
    });
    let drain = find("drain").and_then(|r| Some((r["single"]["n"].as_u64()?, r["single"]["tasks_per_s"].as_f64()?)));
    let fanout = find("drain").and_then(|r| r["fanout"]["tasks_per_s"].as_f64());

    let mut report = Report::new("peers");
    let cell = |x: Option<f64>| x.map(count).unwrap_or_else(|| "—".to_string());
    report.line("| queue | N | enqueue (publish) /s | drain tasks/s |".to_string());
    report.line("| --- | ---: | ---: | ---: |".to_string());
    let n_shown = drain.map(|d| d.0).or(publish.map(|p| p.0)).map(|n| count(n as f64)).unwrap_or_default();
    report.line(format!(
        "| Sluice @ {commit} | {n_shown} | {} | {} |",
        cell(publish.map(|p| p.1)),
        cell(drain.map(|d| d.1))
    ));
    if let Some(f) = fanout {
        report.line(format!("| Sluice fan-out (all consumers) @ {commit} | {n_shown} | — | {} |", count(f)));
    }
    let mut sorted: Vec<&PeerLine> = peers.iter().collect();
    sorted.sort_by(|a, b| b.process_per_s.unwrap_or(-1.0).total_cmp(&a.process_per_s.unwrap_or(-1.0)));
    for p in sorted {
        let n = p.n.map(|n| count(n as f64)).unwrap_or_default();
        if p.failed {
            report.line(format!("| {} | {n} | failed | failed |", p.peer));
        } else {
            report.line(format!("| {} | {n} | {} | {} |", p.peer, cell(p.enqueue_per_s), cell(p.process_per_s)));
        }
    }
    report.set(
        "sluice",
        json!({ "commit": commit,
                "publish": publish.map(|(n, x)| json!({ "n": n, "events_per_s": x })).unwrap_or(Value::Null),
                "drain": drain.map(|(n, x)| json!({ "n": n, "tasks_per_s": x })).unwrap_or(Value::Null),
                "fanout_tasks_per_s": fanout }),
    );
    report.set("peers", peers);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_result_and_failure_lines() {
        let l = parse("PEER=pgqueuer N=20000 enqueue_s=0.328 process_s=1.226 enqueue_per_s=61018 process_per_s=16313")
            .unwrap();
        assert_eq!(l.peer, "pgqueuer");
        assert_eq!(l.n, Some(20000));
        assert_eq!(l.enqueue_per_s, Some(61018.0));
        assert_eq!(l.process_per_s, Some(16313.0));
        assert!(!l.failed);
        let f = parse("PEER=underway N=20000 FAILED (see logs/underway.log)").unwrap();
        assert!(f.failed);
        assert_eq!(f.process_per_s, None);
        assert!(parse("something else").is_none());
    }
}
