//! The throughput chart: completions and failures per minute over the last
//! hour, as inline SVG (no script, no library), one stacked bar a minute.

use maud::{html, Markup};
use sluice::Minute;

/// The minutes a chart shows.
pub(crate) const MINUTES: u32 = 60;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 120.0;
/// Room under the bars for the time labels, and left of them for the scale.
const AXIS: f64 = 18.0;
const LEFT: f64 = 44.0;

/// The chart, with the hour's totals above it. Each bar has a tooltip
/// with its minute and counts.
pub(crate) fn throughput(id: &str, minutes: &[Minute]) -> Markup {
    let completed: i64 = minutes.iter().map(|m| m.completed).sum();
    let failed: i64 = minutes.iter().map(|m| m.failed).sum();
    let peak = minutes.iter().map(|m| m.completed + m.failed).max().unwrap_or(0);
    let top = peak.max(1) as f64;
    let slot = (WIDTH - LEFT) / minutes.len().max(1) as f64;
    let bar = (slot - 2.0).max(1.0);
    let scale = |n: i64| n as f64 / top * (HEIGHT - AXIS - 4.0);
    let base = HEIGHT - AXIS;
    html! {
        figure.chart id=(id) {
            figcaption {
                strong.completed-total { (completed) } " completed, "
                strong.failed-total { (failed) } " failed in the last hour"
                @if peak > 0 { " (at most " (peak) " a minute)" }
            }
            svg role="img" width=(WIDTH) height=(HEIGHT) viewBox={ "0 0 " (WIDTH) " " (HEIGHT) }
                aria-label={ "Tasks completed and failed per minute, last hour: " (completed) " completed, " (failed) " failed" } {
                line x1=(LEFT) y1=(base) x2=(WIDTH) y2=(base) stroke="#c8ccd4" {}
                text x=(LEFT - 4.0) y="12" text-anchor="end" font-size="11" fill="#5b6372" { (peak) "/min" }
                text x=(LEFT - 4.0) y=(base) text-anchor="end" font-size="11" fill="#5b6372" { "0" }
                @for (i, m) in minutes.iter().enumerate() {
                    @let x = LEFT + i as f64 * slot + 1.0;
                    @let done = scale(m.completed);
                    @let lost = scale(m.failed);
                    g.minute {
                        title { (m.at.format("%H:%M UTC")) ": " (m.completed) " completed, " (m.failed) " failed" }
                        // Always a hit area for the tooltip, even on an empty minute.
                        rect x=(x) y="0" width=(bar) height=(base) fill="transparent" {}
                        @if m.completed > 0 {
                            rect x=(x) y=(base - done) width=(bar) height=(done) fill="#4c9a5b" {}
                        }
                        @if m.failed > 0 {
                            rect x=(x) y=(base - done - lost) width=(bar) height=(lost) fill="#c8473d" {}
                        }
                    }
                }
                text x=(LEFT) y=(HEIGHT - 4.0) font-size="11" fill="#5b6372" { (minutes.len()) " min ago" }
                text x=(WIDTH) y=(HEIGHT - 4.0) text-anchor="end" font-size="11" fill="#5b6372" { "now" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};

    fn minutes(counts: &[(i64, i64)]) -> Vec<sluice::Minute> {
        let start = Utc.with_ymd_and_hms(2026, 12, 2, 17, 0, 0).unwrap();
        counts
            .iter()
            .enumerate()
            .map(|(i, &(completed, failed))| {
                serde_json::from_value(serde_json::json!({
                    "at": start + Duration::minutes(i as i64), "completed": completed, "failed": failed
                }))
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn bars_are_scaled_to_the_busiest_minute_with_totals_and_tooltips() {
        let svg = super::throughput("t", &minutes(&[(0, 0), (30, 10), (10, 0)])).into_string();
        assert!(svg.contains(r#"<strong class="completed-total">40</strong>"#), "{svg}");
        assert!(svg.contains(r#"<strong class="failed-total">10</strong>"#), "{svg}");
        assert!(svg.contains("at most 40 a minute"), "{svg}");
        assert!(svg.contains("<title>17:01 UTC: 30 completed, 10 failed</title>"), "{svg}");
        // The busiest minute fills the plot (98 px); the third is a quarter of it.
        assert!(svg.contains(r##"height="73.5" fill="#4c9a5b""##), "{svg}");
        assert!(svg.contains(r##"height="24.5" fill="#4c9a5b""##), "{svg}");
        assert_eq!(svg.matches("<g class=\"minute\">").count(), 3);
    }

    #[test]
    fn an_idle_hour_draws_no_bars_and_no_division_by_zero() {
        let svg = super::throughput("t", &minutes(&[(0, 0); 60])).into_string();
        assert!(!svg.contains("#4c9a5b") && !svg.contains("NaN"), "{svg}");
        assert!(svg.contains("60 min ago"), "{svg}");
    }
}
