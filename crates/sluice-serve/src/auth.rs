//! HTTP basic auth for the routes `sluice serve` guards (the dashboard).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use subtle::ConstantTimeEq;

/// A user and password for HTTP basic auth, from `USER:PASS` (the password
/// may itself hold colons). Its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    user: String,
    password: String,
}

impl BasicAuth {
    /// Credentials from a user and a password.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> BasicAuth {
        BasicAuth { user: user.into(), password: password.into() }
    }

    /// Whether an `Authorization` header's value carries these credentials.
    fn admits(&self, authorization: &[u8]) -> bool {
        let Some(encoded) = authorization.strip_prefix(b"Basic ") else { return false };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim_ascii()) else {
            return false;
        };
        let expected = format!("{}:{}", self.user, self.password);
        // In time that does not depend on where the first difference is.
        decoded.ct_eq(expected.as_bytes()).into()
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth").field("user", &self.user).field("password", &"***").finish()
    }
}

impl FromStr for BasicAuth {
    type Err = String;

    fn from_str(s: &str) -> Result<BasicAuth, String> {
        match s.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(BasicAuth::new(user, password)),
            _ => Err("expected USER:PASS, both non-empty".to_string()),
        }
    }
}

/// `router` with every route behind basic auth: a request without these
/// credentials gets 401 and a `WWW-Authenticate` challenge.
pub fn require_basic_auth(router: Router, auth: BasicAuth) -> Router {
    let auth = Arc::new(auth);
    router.layer(axum::middleware::from_fn(move |request: Request, next: Next| {
        let auth = auth.clone();
        async move {
            let admitted =
                request.headers().get(header::AUTHORIZATION).is_some_and(|value| auth.admits(value.as_bytes()));
            if admitted {
                next.run(request).await
            } else {
                unauthorized()
            }
        }
    }))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, r#"Basic realm="sluice", charset="UTF-8""#)],
        "authentication required\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::BasicAuth;
    use base64::Engine;

    fn header(credentials: &str) -> Vec<u8> {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials)).into_bytes()
    }

    #[test]
    fn only_the_exact_credentials_are_admitted() {
        let auth: BasicAuth = "admin:s3:cret".parse().unwrap();
        assert!(auth.admits(&header("admin:s3:cret")));
        assert!(!auth.admits(&header("admin:s3:cre")));
        assert!(!auth.admits(&header("admin:s3:crets")));
        assert!(!auth.admits(&header("root:s3:cret")));
        assert!(!auth.admits(b"Bearer abc"));
        assert!(!auth.admits(b"Basic !!!"));
        assert!(!format!("{auth:?}").contains("s3"));
        for bad in ["admin", ":pass", "admin:", ""] {
            assert!(bad.parse::<BasicAuth>().is_err(), "{bad:?}");
        }
    }
}
