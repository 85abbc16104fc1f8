//! The task filter as a form: read from the query string (or a posted
//! form), checked field by field so each error shows next to its field.

use std::collections::BTreeMap;

use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use sluice::{TaskFilter, TaskState};

/// The states a filter offers, in the queue's order.
pub(crate) const STATES: [&str; 6] = ["scheduled", "available", "running", "completed", "discarded", "cancelled"];

/// The filter's fields as typed; empty means "any".
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub(crate) struct FilterForm {
    pub state: String,
    pub subject: String,
    pub older_than: String,
}

/// A filter checked: the library's filter, or an error per field.
pub(crate) struct Checked {
    pub filter: TaskFilter,
    pub errors: BTreeMap<&'static str, String>,
}

impl FilterForm {
    pub(crate) fn check(&self) -> Checked {
        let mut filter = TaskFilter::default();
        let mut errors = BTreeMap::new();
        let state = self.state.trim();
        if !state.is_empty() {
            match state.parse::<TaskState>() {
                Ok(s) => filter = filter.state(s),
                Err(e) => {
                    errors.insert("state", format!("{e}: one of {}", STATES.join(", ")));
                }
            }
        }
        let subject = self.subject.trim();
        if !subject.is_empty() {
            match sluice::check_pattern(subject) {
                Ok(()) => filter = filter.subject(subject),
                Err(e) => {
                    errors.insert("subject", e.to_string());
                }
            }
        }
        let age = self.older_than.trim();
        if !age.is_empty() {
            match humantime::parse_duration(age) {
                Ok(d) => filter = filter.older_than(d),
                Err(e) => {
                    errors.insert(
                        "older_than",
                        format!("{age:?} is not a duration ({e}); write e.g. 90s, 15m, 2h, 1day"),
                    );
                }
            }
        }
        Checked { filter, errors }
    }

    /// The query string that selects the same tasks (without a leading `?`).
    pub(crate) fn query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }

    /// What the filter takes, in words.
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.state.trim().is_empty() {
            parts.push(format!("state {}", self.state.trim()));
        }
        if !self.subject.trim().is_empty() {
            parts.push(format!("subject {}", self.subject.trim()));
        }
        if !self.older_than.trim().is_empty() {
            parts.push(format!("older than {}", self.older_than.trim()));
        }
        if parts.is_empty() {
            "every task".to_string()
        } else {
            parts.join(", ")
        }
    }

    /// The filter's fields as hidden inputs (a bulk action's confirmation).
    pub(crate) fn hidden(&self) -> Markup {
        html! {
            input type="hidden" name="state" value=(self.state);
            input type="hidden" name="subject" value=(self.subject);
            input type="hidden" name="older_than" value=(self.older_than);
        }
    }

    /// The filter's fields as a form, each error next to its field.
    pub(crate) fn fields(&self, errors: &BTreeMap<&'static str, String>) -> Markup {
        let error = |name: &str| errors.get(name).map(|e| html! { span.field-error id={ "error-" (name) } { (e) } });
        html! {
            label { "State "
                select name="state" {
                    option value="" selected[self.state.is_empty()] { "any" }
                    @for s in STATES { option value=(s) selected[self.state == s] { (s) } }
                    @if !self.state.is_empty() && !STATES.contains(&self.state.as_str()) {
                        option value=(self.state) selected { (self.state) }
                    }
                }
                @if let Some(e) = error("state") { (e) }
            }
            label { "Subject "
                input type="text" name="subject" value=(self.subject) placeholder="orders.*.created or orders.>";
                @if let Some(e) = error("subject") { (e) }
            }
            label { "Older than "
                input type="text" name="older_than" value=(self.older_than) placeholder="15m, 2h, 1day" size="8";
                @if let Some(e) = error("older_than") { (e) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FilterForm;

    fn form(state: &str, subject: &str, older_than: &str) -> FilterForm {
        FilterForm { state: state.into(), subject: subject.into(), older_than: older_than.into() }
    }

    #[test]
    fn each_bad_field_has_its_own_error() {
        let checked = form("dead", "a.>.b", "soon").check();
        let fields: Vec<_> = checked.errors.keys().copied().collect();
        assert_eq!(fields, ["older_than", "state", "subject"]);
        assert!(checked.errors["state"].contains("\"dead\""), "{:?}", checked.errors);
        assert!(checked.errors["subject"].contains("a.>.b"), "{:?}", checked.errors);
        assert!(checked.errors["older_than"].contains("soon"), "{:?}", checked.errors);
    }

    #[test]
    fn good_fields_make_the_filter() {
        let checked = form("discarded", "orders.*.created", "2h").check();
        assert!(checked.errors.is_empty(), "{:?}", checked.errors);
        assert_eq!(checked.filter.states(), [sluice::TaskState::Discarded]);
        let all = form("", " ", "").check();
        assert!(all.errors.is_empty());
        assert_eq!(all.filter, sluice::TaskFilter::default());
        assert_eq!(form("discarded", "a.>", "").query(), "state=discarded&subject=a.%3E&older_than=");
    }
}
