//! What went wrong upstream, as far as routing cares.

/// What went wrong upstream, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    RateLimited,
    Overloaded,
    Server,
    Timeout,
    Unreachable,
    BadRequest,
    Auth,
    NotFound,
    ContextLength,
    ContentFilter,
    /// The gateway could not express the request in the deployment's format; nothing was
    /// sent.
    Unsupported,
    /// The provider reported processing the request outside the deployment's jurisdiction:
    /// its answer is not used, and the attempt is on the ledger as a breach.
    ResidencyBreach,
}

impl ErrorClass {
    /// An upstream status as the providers agree on it: rate limits, overload, timeouts,
    /// credentials, unknown paths; any other 4xx is what `client_error` makes of the
    /// provider's body, anything else a server failure.
    pub fn of_status(status: u16, client_error: impl FnOnce() -> ErrorClass) -> ErrorClass {
        match status {
            429 => Self::RateLimited,
            503 | 529 => Self::Overloaded,
            408 | 504 => Self::Timeout,
            401 | 403 => Self::Auth,
            404 => Self::NotFound,
            400..=499 => client_error(),
            _ => Self::Server,
        }
    }

    /// Whether another deployment may succeed where this one failed. A bad request, bad
    /// credentials or a content filter would fail (or be refused) the same way elsewhere.
    pub fn falls_back(self) -> bool {
        matches!(
            self,
            Self::RateLimited
                | Self::Overloaded
                | Self::Server
                | Self::Timeout
                | Self::Unreachable
                | Self::ResidencyBreach
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::Server => "server",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::BadRequest => "bad_request",
            Self::Auth => "auth",
            Self::NotFound => "not_found",
            Self::ContextLength => "context_length",
            Self::ContentFilter => "content_filter",
            Self::Unsupported => "unsupported",
            Self::ResidencyBreach => "residency_breach",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_fall_back() {
        use ErrorClass::*;
        for c in [RateLimited, Overloaded, Server, Timeout, Unreachable, ResidencyBreach] {
            assert!(c.falls_back(), "{}", c.as_str());
        }
        for c in [BadRequest, Auth, NotFound, ContextLength, ContentFilter] {
            assert!(!c.falls_back(), "{}", c.as_str());
        }
    }
}
