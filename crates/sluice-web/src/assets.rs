//! The vendored htmx and its SSE extension, embedded in the binary (see
//! assets/README.md).

use axum::http::header;
use axum::response::IntoResponse;

/// The htmx release embedded in the dashboard.
pub const HTMX_VERSION: &str = "2.0.11";

/// Where the router serves htmx. The version is in the path, so browsers may
/// keep it for a year: a new release is a new path.
pub const HTMX_PATH: &str = "/assets/htmx-2.0.11.min.js";

/// The release of htmx's SSE extension (`htmx-ext-sse`) embedded beside it.
pub const SSE_VERSION: &str = "2.2.4";

/// Where the router serves the SSE extension.
pub const SSE_PATH: &str = "/assets/htmx-ext-sse-2.2.4.min.js";

const HTMX: &[u8] = include_bytes!("../assets/htmx.min.js");
const SSE: &[u8] = include_bytes!("../assets/htmx-ext-sse.min.js");

pub(crate) async fn htmx() -> impl IntoResponse {
    script(HTMX)
}

pub(crate) async fn sse() -> impl IntoResponse {
    script(SSE)
}

fn script(body: &'static [u8]) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
}
