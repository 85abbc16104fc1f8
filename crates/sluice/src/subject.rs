//! Names, subjects and subject patterns: the rules, checked before anything
//! is sent to the database (the schema checks the same rules again).

use crate::error::InvalidInput;

/// The longest stream or consumer name.
pub const MAX_NAME_LEN: usize = 64;
/// The longest subject or pattern.
pub const MAX_SUBJECT_LEN: usize = 255;
/// The most patterns in a consumer's include (or exclude) list: one regular
/// expression serves the whole list, and Postgres compiles only so much.
pub const MAX_PATTERNS: usize = 100;

/// Refuses text Postgres cannot store: a NUL character.
pub(crate) fn check_text(setting: &'static str, text: &str) -> Result<(), InvalidInput> {
    if text.contains('\0') {
        return Err(InvalidInput::Setting {
            setting,
            reason: format!("{text:?} contains a NUL character, which Postgres text cannot hold"),
        });
    }
    Ok(())
}

/// Whether serialized JSON holds an escaped NUL (`\u0000`, not `\\u0000`),
/// which Postgres jsonb refuses.
pub(crate) fn json_has_nul(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut i = 0;
    while let Some(at) = json[i..].find("\\u0000") {
        let at = i + at;
        let backslashes = bytes[..at].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 0 {
            return true;
        }
        i = at + 1;
    }
    false
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Checks a stream, consumer or other name: 1 to 64 characters of letters,
/// digits, `_` and `-`, starting with a letter or digit. `kind` names what
/// it is in the error.
pub fn check_name(kind: &'static str, name: &str) -> Result<(), InvalidInput> {
    let fail = |reason: &str| InvalidInput::Name { kind, name: name.to_string(), reason: reason.to_string() };
    if name.is_empty() {
        return Err(fail("a name cannot be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(fail("a name is at most 64 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(fail("a name starts with a letter or a digit"));
    }
    if let Some(c) = name.chars().find(|c| !is_token_char(*c)) {
        return Err(fail(&format!("{c:?} is not allowed; use letters, digits, '_' and '-'")));
    }
    Ok(())
}

/// Checks an event subject: dot-separated tokens of letters, digits, `_` and
/// `-` (`orders.eu.created`), at most 255 characters.
pub fn check_subject(subject: &str) -> Result<(), InvalidInput> {
    let fail = |reason: String| InvalidInput::Subject { subject: subject.to_string(), reason };
    if subject.is_empty() {
        return Err(fail("a subject cannot be empty".into()));
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(fail(format!("a subject is at most {MAX_SUBJECT_LEN} characters")));
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Err(fail("empty token: a subject has no leading, trailing or double dots".into()));
        }
        if token == "*" || token == ">" {
            return Err(fail("wildcards belong in patterns, not in subjects".into()));
        }
        if let Some(c) = token.chars().find(|c| !is_token_char(*c)) {
            return Err(fail(format!("{c:?} is not allowed; tokens use letters, digits, '_' and '-'")));
        }
    }
    Ok(())
}

/// Checks a subject pattern: a subject whose tokens may also be `*` (any one
/// token) or, as the last token, `>` (one or more tokens).
pub fn check_pattern(pattern: &str) -> Result<(), InvalidInput> {
    let fail = |reason: String| InvalidInput::Pattern { pattern: pattern.to_string(), reason };
    if pattern.is_empty() {
        return Err(fail("a pattern cannot be empty".into()));
    }
    if pattern.len() > MAX_SUBJECT_LEN {
        return Err(fail(format!("a pattern is at most {MAX_SUBJECT_LEN} characters")));
    }
    let tokens: Vec<&str> = pattern.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        match *token {
            "" => return Err(fail("empty token: a pattern has no leading, trailing or double dots".into())),
            "*" => {}
            ">" if i + 1 == tokens.len() => {}
            ">" => return Err(fail("'>' can only be the last token".into())),
            t => {
                if let Some(c) = t.chars().find(|c| !is_token_char(*c)) {
                    return Err(fail(format!(
                        "{c:?} is not allowed; tokens use letters, digits, '_' and '-', or are '*' or a final '>'"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Whether `subject` matches `pattern` (NATS wildcards: `*` one token, `>`
/// one or more trailing tokens). Both are assumed valid. The database
/// evaluates the same rule with a regular expression when it materializes
/// tasks; this is the reference for it.
///
/// ```
/// use sluice::subject_matches;
/// assert!(subject_matches("orders.*.created", "orders.eu.created"));
/// assert!(subject_matches("orders.>", "orders.eu.created"));
/// assert!(!subject_matches("orders.>", "orders"));
/// ```
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match p {
            ">" => return subject_tokens.next().is_some(),
            "*" => {
                if subject_tokens.next().is_none() {
                    return false;
                }
            }
            literal => {
                if subject_tokens.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("stream", "orders").is_ok());
        assert!(check_name("stream", "orders-v2_eu").is_ok());
        assert!(check_name("stream", "").is_err());
        assert!(check_name("stream", "_x").is_err());
        assert!(check_name("stream", "a.b").is_err());
        assert!(check_name("stream", &"a".repeat(65)).is_err());
        assert!(check_name("stream", &"a".repeat(64)).is_ok());
    }

    #[test]
    fn subjects_and_patterns() {
        assert!(check_subject("orders.eu.created").is_ok());
        for bad in ["", ".a", "a.", "a..b", "a.*", "a.>", "a b", "a.é"] {
            assert!(check_subject(bad).is_err(), "{bad}");
        }
        for good in [">", "*", "a.*.c", "a.>", "*.>", "a"] {
            assert!(check_pattern(good).is_ok(), "{good}");
        }
        for bad in ["", "a.>.b", "a..b", "a.b*", "a.>>"] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nul_in_json() {
        assert!(json_has_nul(r#"{"a":"x\u0000y"}"#));
        assert!(!json_has_nul(r#"{"a":"x\\u0000y"}"#));
        assert!(json_has_nul(r#"{"a":"x\\\u0000y"}"#));
        assert!(!json_has_nul(r#"{"a":"u0000"}"#));
    }

    #[test]
    fn matching() {
        assert!(subject_matches(">", "a"));
        assert!(subject_matches(">", "a.b.c"));
        assert!(subject_matches("a.*", "a.b"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(!subject_matches("a.*", "a"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.c"));
        assert!(!subject_matches("a.b", "a.b.c"));
    }
}
