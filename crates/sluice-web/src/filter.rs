//! The task filter as a form: read from the query string (or a posted
//! form), checked field by field so each error shows next to its field.

use std::collections::BTreeMap;

use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use sluice::{TaskFilter, TaskState};

/// The states a filter offers, in the queue's order.
pub(crate) const STATES: [&str; 7] =
    ["scheduled", "waiting", "available", "running", "completed", "discarded", "cancelled"];

const HIDDEN: &str = "this dashboard hides payloads and metadata, so it does not match on them either";

/// The filter's fields as typed; empty means "any".
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub(crate) struct FilterForm {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub state: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subject: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub older_than: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub payload: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub metadata: String,
}

/// A filter checked: the library's filter, or an error per field.
pub(crate) struct Checked {
    pub filter: TaskFilter,
    pub errors: BTreeMap<&'static str, String>,
}

impl FilterForm {
    /// Checks every field. With payloads hidden, a payload or metadata
    /// match is refused: it would reveal them a guess at a time.
    pub(crate) fn check(&self, hide_payloads: bool) -> Checked {
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
        let payload = self.payload.trim();
        if !payload.is_empty() && hide_payloads {
            errors.insert("payload", HIDDEN.to_string());
        } else if !payload.is_empty() {
            match serde_json::from_str(payload) {
                Ok(json) => filter = filter.payload_contains(json),
                Err(e) => {
                    errors.insert("payload", format!("not JSON ({e}); write e.g. {{\"customer\": \"c-42\"}}"));
                }
            }
        }
        let metadata = self.metadata.trim();
        if !metadata.is_empty() && hide_payloads {
            errors.insert("metadata", HIDDEN.to_string());
        } else if !metadata.is_empty() {
            match serde_json::from_str(metadata) {
                Ok(json) => {
                    // Only the metadata can be wrong here: the rest was added checked.
                    let with = filter.clone().metadata_contains(json);
                    match with.validate() {
                        Ok(()) => filter = with,
                        Err(e) => {
                            errors.insert("metadata", e.to_string());
                        }
                    }
                }
                Err(e) => {
                    errors.insert("metadata", format!("not JSON ({e}); write e.g. {{\"tenant\": \"eu\"}}"));
                }
            }
        }
        Checked { filter, errors }
    }

    /// The query string that selects the same tasks (without a leading `?`;
    /// empty fields left out).
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
        if !self.payload.trim().is_empty() {
            parts.push(format!("payload containing {}", self.payload.trim()));
        }
        if !self.metadata.trim().is_empty() {
            parts.push(format!("metadata containing {}", self.metadata.trim()));
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
            input type="hidden" name="payload" value=(self.payload);
            input type="hidden" name="metadata" value=(self.metadata);
        }
    }

    /// The filter's fields as a form, each error next to its field.
    /// With payloads hidden there are no payload and metadata fields.
    pub(crate) fn fields(&self, errors: &BTreeMap<&'static str, String>, hide_payloads: bool) -> Markup {
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
            @if !hide_payloads {
                label { "Payload contains "
                    input type="text" name="payload" value=(self.payload) placeholder=r#"{"customer": "c-42"}"# size="22";
                    @if let Some(e) = error("payload") { (e) }
                }
                label { "Metadata contains "
                    input type="text" name="metadata" value=(self.metadata) placeholder=r#"{"tenant": "eu"}"# size="18";
                    @if let Some(e) = error("metadata") { (e) }
                }
            } @else if let Some(e) = error("payload").or_else(|| error("metadata")) {
                (e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FilterForm;

    fn form(state: &str, subject: &str, older_than: &str) -> FilterForm {
        FilterForm {
            state: state.into(),
            subject: subject.into(),
            older_than: older_than.into(),
            ..FilterForm::default()
        }
    }

    fn matching(payload: &str, metadata: &str) -> FilterForm {
        FilterForm { payload: payload.into(), metadata: metadata.into(), ..FilterForm::default() }
    }

    #[test]
    fn payload_and_metadata_must_be_json_and_metadata_strings() {
        let checked = matching("{\"customer\":", "[\"eu\"]").check(false);
        assert!(checked.errors["payload"].starts_with("not JSON"), "{:?}", checked.errors);
        assert!(checked.errors["metadata"].contains("metadata_contains"), "{:?}", checked.errors);
        assert_eq!(matching("", "{\"tenant\": 1}").check(false).errors.len(), 1);
        let good = matching("{\"customer\": \"c-42\"}", "{\"tenant\": \"eu\"}").check(false);
        assert!(good.errors.is_empty(), "{:?}", good.errors);
        let expected = sluice::TaskFilter::default()
            .payload_contains(serde_json::json!({"customer": "c-42"}))
            .metadata_contains(serde_json::json!({"tenant": "eu"}));
        assert_eq!(good.filter, expected);
        let hidden = matching("{}", "{}").check(true);
        assert_eq!(hidden.errors.keys().copied().collect::<Vec<_>>(), ["metadata", "payload"]);
    }

    #[test]
    fn each_bad_field_has_its_own_error() {
        let checked = form("dead", "a.>.b", "soon").check(false);
        let fields: Vec<_> = checked.errors.keys().copied().collect();
        assert_eq!(fields, ["older_than", "state", "subject"]);
        assert!(checked.errors["state"].contains("\"dead\""), "{:?}", checked.errors);
        assert!(checked.errors["subject"].contains("a.>.b"), "{:?}", checked.errors);
        assert!(checked.errors["older_than"].contains("soon"), "{:?}", checked.errors);
    }

    #[test]
    fn good_fields_make_the_filter() {
        let checked = form("discarded", "orders.*.created", "2h").check(false);
        assert!(checked.errors.is_empty(), "{:?}", checked.errors);
        assert_eq!(checked.filter.states(), [sluice::TaskState::Discarded]);
        let all = form("", " ", "").check(false);
        assert!(all.errors.is_empty());
        assert_eq!(all.filter, sluice::TaskFilter::default());
        assert_eq!(form("discarded", "a.>", "").query(), "state=discarded&subject=a.%3E");
    }
}
