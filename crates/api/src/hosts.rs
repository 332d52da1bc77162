//! Which `Host` a request may name. A web page the operator opens can make the browser
//! reach the node under a name the page's author controls (DNS rebinding: the name first
//! resolves to the author's server, then to 127.0.0.1), and the browser then treats the
//! node as that page's own origin. The node therefore answers only requests addressed to
//! an IP address, to `localhost`, or to a name the operator allows (`--allowed-host`).

use crate::error::body_of;
use axum::extract::Request;
use axum::http::header::HOST;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::{Json, Router};
use flatstack_kernel::Fault;
use std::net::IpAddr;
use std::sync::Arc;

/// `router`, answering only requests whose `Host` is an IP address, `localhost` or one of
/// `allowed` (names, compared without case; a port is ignored). Any other is refused with
/// `421 Misdirected Request` in the JSON error shape, before anything reads it.
pub fn allow_hosts(router: Router, allowed: Vec<String>) -> Router {
    let allowed: Arc<Vec<String>> = Arc::new(
        allowed
            .into_iter()
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty())
            .collect(),
    );
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let allowed = allowed.clone();
            async move {
                let host = request.headers().get(HOST).map(|h| h.to_str().ok());
                match host {
                    // No Host at all (HTTP/1.0): nothing a browser could have been tricked into.
                    None => next.run(request).await,
                    Some(Some(host)) if is_allowed(host, &allowed) => next.run(request).await,
                    Some(_) => {
                        let fault = Fault::invalid(
                            "host",
                            "this node does not answer to that Host; address it by IP, as \
                         localhost, or by a name given with --allowed-host",
                        );
                        (StatusCode::MISDIRECTED_REQUEST, Json(body_of(&fault))).into_response()
                    }
                }
            }
        },
    ))
}

/// Whether `host` (a `Host` header: a name or an address, maybe with a port) is allowed.
fn is_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:8080`
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => host,
        },
    };
    let name = name.to_ascii_lowercase();
    name.parse::<IpAddr>().is_ok() || name == "localhost" || allowed.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::is_allowed;

    #[test]
    fn addresses_localhost_and_allowed_names_pass_and_nothing_else() {
        let allowed = ["flatstack.example.com".to_owned()];
        for host in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "10.0.0.5:80",
            "[::1]:8080",
            "[::1]",
            "localhost:8080",
            "LOCALHOST",
            "flatstack.example.com",
            "FlatStack.Example.com:443",
        ] {
            assert!(is_allowed(host, &allowed), "{host}");
        }
        for host in [
            "evil.example.net",
            "evil.example.net:8080",
            "localhost.evil.net",
            "127.0.0.1.nip.io",
            "example.com",
            "",
        ] {
            assert!(!is_allowed(host, &allowed), "{host}");
        }
    }
}
