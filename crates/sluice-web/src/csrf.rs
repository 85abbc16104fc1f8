//! Cross-site request forgery: a POST is refused unless it carries the
//! dashboard's cookie, set `SameSite=Strict` with every page (so a browser
//! never sends it with a request another site starts), and either comes
//! from htmx (`HX-Request: true`, a header a cross-site form cannot set and
//! a cross-site script cannot send without a CORS preflight this router
//! never grants) or carries the process's token in a `csrf` form field.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use subtle::ConstantTimeEq;

use crate::WebState;

/// The largest form an action takes (a filter and a reason).
const FORM_LIMIT: usize = 64 * 1024;

pub(crate) fn new_token() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cookie that proves a request comes from a dashboard page.
pub(crate) const COOKIE: &str = "sluice_csrf";

/// Sets the cookie on every page (and error page) the dashboard serves.
pub(crate) async fn set_cookie(State(state): State<WebState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let html = response.headers().get(header::CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"text/html"));
    if html {
        let path = if state.href("").is_empty() { "/".to_string() } else { state.href("") };
        let cookie = format!("{COOKIE}={}; Path={path}; SameSite=Strict; HttpOnly", state.csrf_token());
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

pub(crate) async fn guard(State(state): State<WebState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    if !has_cookie(&request, state.csrf_token()) {
        return crate::error::page(
            &state,
            StatusCode::FORBIDDEN,
            "Refused",
            "this request came without the dashboard's cookie: it was started by another site, or \
             this browser refuses cookies, or the dashboard restarted since the page was loaded \
             (reload it); nothing was changed",
        );
    }
    if request.headers().get("hx-request").is_some_and(|v| v.as_bytes() == b"true") {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, FORM_LIMIT).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "form too large\n").into_response();
    };
    let token = form_field(&bytes, "csrf");
    if !token.is_some_and(|t| same(t.as_bytes(), state.csrf_token().as_bytes())) {
        return crate::error::page(
            &state,
            StatusCode::FORBIDDEN,
            "Refused",
            "this request came without the dashboard's CSRF token or the HX-Request header, \
             so it may come from another site; nothing was changed",
        );
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

fn has_cookie(request: &Request, token: &str) -> bool {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == COOKIE && same(value.as_bytes(), token.as_bytes()))
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    fields.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Compares in time that does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_fresh_and_compared_whole() {
        let (a, b) = (super::new_token(), super::new_token());
        assert_eq!(a.len(), 48);
        assert_ne!(a, b);
        assert!(super::same(a.as_bytes(), a.as_bytes()));
        assert!(!super::same(a.as_bytes(), b.as_bytes()));
        assert!(!super::same(a.as_bytes(), &a.as_bytes()[..47]));
        assert_eq!(super::form_field(b"reason=x&csrf=abc", "csrf").as_deref(), Some("abc"));
        assert_eq!(super::form_field(b"reason=x", "csrf"), None);
    }
}
