//! What a page shows when it cannot show what was asked: 404 for a stream,
//! consumer or task that does not exist (saying which), 500 otherwise.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::layout;
use crate::WebState;

/// Why a page could not be rendered.
pub(crate) enum WebError {
    /// Nothing by that name or id: the message says what.
    NotFound(String),
    /// The database or the library failed.
    Failed(sluice::Error),
}

impl From<sluice::Error> for WebError {
    fn from(e: sluice::Error) -> WebError {
        match e {
            sluice::Error::StreamNotFound { .. }
            | sluice::Error::ConsumerNotFound { .. }
            | sluice::Error::TaskNotFound { .. } => WebError::NotFound(e.to_string()),
            e => WebError::Failed(e),
        }
    }
}

impl WebError {
    pub(crate) fn into_page(self, state: &WebState) -> Response {
        match self {
            WebError::NotFound(what) => page(state, StatusCode::NOT_FOUND, "Not found", &what),
            WebError::Failed(e) => {
                tracing::warn!(error = %e, "a dashboard page failed");
                page(state, StatusCode::INTERNAL_SERVER_ERROR, "Something failed", &e.to_string())
            }
        }
    }
}

/// A page that only says what went wrong.
pub(crate) fn page(state: &WebState, status: StatusCode, title: &str, message: &str) -> Response {
    let body = layout::page(
        state,
        title,
        html! {
            h1 { (title) }
            p.error { (message) }
            p { a href=(state.href("/")) { "Back to the overview" } }
        },
    );
    (status, body).into_response()
}

/// The result of a page handler.
pub(crate) type PageResult = Result<Response, WebError>;

/// Renders a handler's result, errors as their pages.
pub(crate) fn render(state: &WebState, result: PageResult) -> Response {
    result.unwrap_or_else(|e| e.into_page(state))
}
