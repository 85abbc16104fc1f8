//! How the commands print: human tables by default, JSON with `--json`;
//! durations and times read and written the same way everywhere; and the
//! confirmation a destructive command asks for.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use comfy_table::{presets, Table};

/// Human or machine output, chosen by the global `--json`.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub json: bool,
}

impl Out {
    /// Prints `value` as one JSON document (with `--json`).
    pub fn json(&self, value: &impl serde::Serialize) -> Result<()> {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }

    /// Prints `value` as JSON with `--json`, else the human text `human` makes.
    pub fn print(&self, value: &impl serde::Serialize, human: impl FnOnce() -> String) -> Result<()> {
        if self.json {
            self.json(value)
        } else {
            let text = human();
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
            Ok(())
        }
    }
}

/// A table without borders, in the manner of `kubectl get`.
pub fn table<I: IntoIterator<Item = &'static str>>(header: I) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_header(header);
    t
}

/// A duration as the flags take it: `30s`, `5m`, `1h 30m`, `7days`.
pub fn parse_duration(flag: &str, text: &str) -> Result<Duration> {
    humantime::parse_duration(text.trim())
        .map_err(|e| anyhow::anyhow!("invalid {flag} {text:?}: {e} (write durations as 30s, 5m, 2h, 7days)"))
}

/// A duration as people read it, to the second (to the millisecond below one).
pub fn duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// How long ago `at` was, as people read it; `-` for none.
pub fn age(at: Option<DateTime<Utc>>) -> String {
    match at {
        Some(at) => duration((Utc::now() - at).to_std().unwrap_or_default()),
        None => "-".to_string(),
    }
}

/// A time as RFC 3339, to the second, in UTC.
pub fn time(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_else(|| "-".to_string())
}

/// A time as the flags take it: RFC 3339 (`2026-12-02T10:00:00Z`).
pub fn parse_time(flag: &str, text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim()).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        anyhow::anyhow!("invalid {flag} {text:?}: {e} (write times in RFC 3339, e.g. 2026-12-02T10:00:00Z)")
    })
}

/// Asks before a destructive change, unless `--yes`. Without a terminal to
/// ask on, refuses: a script says `--yes`.
pub fn confirm(yes: bool, question: &str) -> Result<()> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("{question} Not confirmed: pass --yes to confirm without a terminal");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
        Ok(())
    } else {
        bail!("not confirmed: nothing was changed")
    }
}
