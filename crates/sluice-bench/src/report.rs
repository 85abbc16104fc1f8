//! How results leave the bench: a human summary on stdout, or with `--json`
//! one JSON object per scenario per line on stdout (and the human text on
//! stderr). Also the small number formatters and percentiles.

use std::io::Write as _;

use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::Params;
use crate::machine::Machine;

/// One scenario's outcome.
pub struct Report {
    pub scenario: &'static str,
    /// Machine-readable results.
    pub results: Value,
    /// The same, for people.
    pub lines: Vec<String>,
}

impl Report {
    pub fn new(scenario: &'static str) -> Report {
        Report { scenario, results: json!({}), lines: Vec::new() }
    }

    pub fn line(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    pub fn set(&mut self, key: &str, value: impl Serialize) {
        self.results[key] = serde_json::to_value(value).expect("results serialize");
    }
}

pub struct Output {
    json: bool,
    machine: Machine,
    params: Params,
}

impl Output {
    pub fn new(json: bool, machine: Machine, params: Params) -> Output {
        Output { json, machine, params }
    }

    /// Prints the machine and the parameters (to stderr under `--json`).
    pub fn header(&self) {
        let mut lines = vec!["== machine".to_string()];
        lines.extend(self.machine.human().into_iter().map(|l| format!("  {l}")));
        lines.push("== parameters".to_string());
        let params = serde_json::to_value(&self.params).expect("params serialize");
        if let Value::Object(map) = params {
            for (k, v) in map {
                lines.push(format!("  {k:<18} {v}"));
            }
        }
        self.human(&lines);
    }

    pub fn emit(&self, report: &Report) {
        let mut lines = vec![format!("== {}", report.scenario)];
        lines.extend(report.lines.iter().map(|l| format!("  {l}")));
        self.human(&lines);
        if self.json {
            let object = json!({
                "scenario": report.scenario,
                "machine": self.machine,
                "params": self.params,
                "results": report.results,
            });
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{object}");
            let _ = out.flush();
        }
    }

    /// The commit the numbers belong to, marked when the library had local changes.
    pub fn commit_label(&self) -> String {
        match (&self.machine.commit, self.machine.library_dirty) {
            (Some(c), Some(true)) => format!("{c}+dirty"),
            (Some(c), _) => c.clone(),
            (None, _) => "unknown".to_string(),
        }
    }

    /// Progress and diagnostics: always stderr.
    pub fn progress(&self, line: &str) {
        eprintln!("-- {line}");
    }

    fn human(&self, lines: &[String]) {
        let text = lines.join("\n");
        if self.json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
}

/// `12345.6` → `12,346`.
pub fn count(x: f64) -> String {
    let n = x.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

pub fn bytes(b: i64) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.0} kiB", b / 1024.0)
    }
}

/// Rounds to 3 decimals for JSON (seconds, milliseconds, ratios).
pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Nearest-rank percentiles of a sorted sample.
pub struct Percentiles<'a>(pub &'a [u64]);

impl Percentiles<'_> {
    /// The value below which `p` percent of the sample lies (nearest rank).
    pub fn at(&self, p: f64) -> u64 {
        if self.0.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(999.4), "999");
        assert_eq!(count(1000.0), "1,000");
        assert_eq!(count(1234567.0), "1,234,567");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        let p = Percentiles(&v);
        assert_eq!(p.at(50.0), 50);
        assert_eq!(p.at(99.0), 99);
        assert_eq!(p.at(100.0), 100);
        assert_eq!(Percentiles(&[7]).at(50.0), 7);
        assert_eq!(Percentiles(&[]).at(50.0), 0);
    }
}
