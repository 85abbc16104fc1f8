//! The vendored htmx, embedded in the binary (see assets/README.md).

use axum::http::header;
use axum::response::IntoResponse;

/// The htmx release embedded in the dashboard.
pub const HTMX_VERSION: &str = "2.0.11";

/// Where the router serves htmx. The version is in the path, so browsers may
/// keep it for a year: a new release is a new path.
pub const HTMX_PATH: &str = "/assets/htmx-2.0.11.min.js";

const HTMX: &[u8] = include_bytes!("../assets/htmx.min.js");

pub(crate) async fn htmx() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        HTMX,
    )
}
