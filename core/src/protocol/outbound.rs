//! Outbound HTTP to IdPs: no redirects followed, timeouts, capped bodies, and the address check
//! that keeps discovered endpoints off private networks (SSRF).

use super::*;

/// Limits of the outbound HTTP client.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub connect_timeout: Duration,
    pub total_timeout: Duration,
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(10),
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// The HTTP client for IdP calls: never follows redirects (SSRF), has timeouts, caps bodies.
#[derive(Clone)]
pub struct IdpHttp {
    client: reqwest::Client,
    max_body_bytes: usize,
}

/// An outbound call failed. The message never carries a body or a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Connection, TLS or timeout.
    #[error("request to the IdP failed: {0}")]
    Transport(String),
    /// The body exceeded the limit.
    #[error("IdP response larger than {0} bytes")]
    TooLarge(usize),
}

impl IdpHttp {
    pub fn new(limits: HttpLimits) -> Result<Self, HttpError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(limits.connect_timeout)
            .timeout(limits.total_timeout)
            .user_agent(concat!("authnz/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| HttpError::Transport(err.without_url().to_string()))?;
        Ok(Self {
            client,
            max_body_bytes: limits.max_body_bytes,
        })
    }

    /// Sends one request; a 3xx comes back as a response, not followed.
    pub async fn execute(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let request = reqwest::Request::try_from(request)
            .map_err(|err| HttpError::Transport(err.without_url().to_string()))?;
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|err| HttpError::Transport(err.without_url().to_string()))?;
        if response
            .content_length()
            .is_some_and(|len| len > self.max_body_bytes as u64)
        {
            return Err(HttpError::TooLarge(self.max_body_bytes));
        }
        let mut builder = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|err| HttpError::Transport(err.without_url().to_string()))?;
            if body.len() + chunk.len() > self.max_body_bytes {
                return Err(HttpError::TooLarge(self.max_body_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        builder
            .body(body)
            .map_err(|err| HttpError::Transport(err.to_string()))
    }

    /// [`IdpHttp::as_oidc`], keeping the last answer's status in `status`.
    pub(super) fn recording(
        &self,
        status: Arc<std::sync::atomic::AtomicU16>,
    ) -> impl Fn(
        HttpRequest,
    ) -> futures_util::future::BoxFuture<'static, Result<HttpResponse, HttpError>>
           + '_ {
        move |request| {
            let http = self.clone();
            let status = Arc::clone(&status);
            Box::pin(async move {
                let response = http.execute(request).await;
                if let Ok(response) = &response {
                    status.store(
                        response.status().as_u16(),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                response
            })
        }
    }

    /// The client as `openidconnect` wants it.
    pub(super) fn as_oidc(
        &self,
    ) -> impl Fn(
        HttpRequest,
    ) -> futures_util::future::BoxFuture<'static, Result<HttpResponse, HttpError>>
           + '_ {
        move |request| {
            let http = self.clone();
            Box::pin(async move { http.execute(request).await })
        }
    }
}

/// Whether an address is anything but a public unicast one: private, shared (CGNAT
/// 100.64.0.0/10), benchmarking (198.18.0.0/15), link-local (169.254.0.0/16, fe80::/10),
/// unique-local (fc00::/7), unspecified, broadcast, multicast, documentation or `0.0.0.0/8`.
/// Loopback is judged apart (allowed only for a loopback issuer).
pub(super) fn not_public(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_multicast()
                || ip.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
        }
        std::net::IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            ip.is_unspecified()
                || ip.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && ip.segments()[1] == 0x0db8
        }
    }
}
