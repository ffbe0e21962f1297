//! What a request can fail with, mapped once to HTTP statuses and gRPC codes.

use netspectra_store::StoreError;

/// A request's failure: its class decides the HTTP status and gRPC code,
/// the message says what is wrong in terms the caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter is missing, malformed or contradicts the store (400 /
    /// INVALID_ARGUMENT).
    #[error("{0}")]
    BadRequest(String),
    /// Nothing matches (404 / NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// No or a wrong bearer token (401 / UNAUTHENTICATED).
    #[error("missing or invalid bearer token (send `Authorization: Bearer <token>`)")]
    Unauthorized,
    /// The store could not be reached or was busy (503 / UNAVAILABLE).
    #[error("store unavailable: {0}")]
    Unavailable(StoreError),
    /// The store failed to answer a query it could reach: a bug or a
    /// damaged store, not worth retrying (500 / INTERNAL).
    #[error("store query failed: {0}")]
    Internal(StoreError),
    /// Not ready: the store does not answer; the reason is given only to
    /// authenticated callers (503 / UNAVAILABLE).
    #[error("{0}")]
    NotReady(String),
    /// Too many requests in progress: shed at once rather than queued, so
    /// the server stays responsive (503 + `Retry-After` / UNAVAILABLE).
    #[error("too many requests in progress; retry after {RETRY_AFTER_S} s")]
    Overloaded,
    /// The answer took longer than the server allows (503 + `Retry-After`
    /// / DEADLINE_EXCEEDED).
    #[error("no answer within {} s; narrow the time range or the key filter", .0.as_secs_f64())]
    Timeout(std::time::Duration),
}

/// Seconds a shed or timed-out caller is told to wait (`Retry-After`).
pub const RETRY_AFTER_S: u64 = 1;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        if e.is_unavailable() {
            ApiError::Unavailable(e)
        } else {
            ApiError::Internal(e)
        }
    }
}

impl ApiError {
    /// The short machine-readable code of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Unavailable(_) | ApiError::NotReady(_) => "unavailable",
            ApiError::Internal(_) => "internal",
            ApiError::Overloaded => "overloaded",
            ApiError::Timeout(_) => "timeout",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::Unauthorized => 401,
            ApiError::Internal(_) => 500,
            ApiError::Unavailable(_)
            | ApiError::NotReady(_)
            | ApiError::Overloaded
            | ApiError::Timeout(_) => 503,
        }
    }

    /// `Retry-After` seconds, for the errors that asking again can cure.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Overloaded | ApiError::Timeout(_) | ApiError::Unavailable(_) => {
                Some(RETRY_AFTER_S)
            }
            _ => None,
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> tonic::Status {
        let message = e.to_string();
        let retry = e.retry_after();
        let mut status = match e {
            ApiError::BadRequest(_) => tonic::Status::invalid_argument(message),
            ApiError::NotFound(_) => tonic::Status::not_found(message),
            ApiError::Unauthorized => tonic::Status::unauthenticated(message),
            ApiError::Internal(_) => tonic::Status::internal(message),
            ApiError::Timeout(_) => tonic::Status::deadline_exceeded(message),
            ApiError::Unavailable(_) | ApiError::NotReady(_) | ApiError::Overloaded => {
                tonic::Status::unavailable(message)
            }
        };
        if let Some(s) = retry {
            if let Ok(v) = s.to_string().parse() {
                status.metadata_mut().insert("retry-after", v);
            }
        }
        status
    }
}

/// Shorthand for a 400 with a formatted message.
pub(crate) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}
