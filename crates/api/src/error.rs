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
    /// The store could not answer (503 / UNAVAILABLE).
    #[error("store unavailable: {0}")]
    Unavailable(#[from] StoreError),
}

impl ApiError {
    /// The short machine-readable code of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Unavailable(_) => "unavailable",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::Unauthorized => 401,
            ApiError::Unavailable(_) => 503,
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> tonic::Status {
        let message = e.to_string();
        match e {
            ApiError::BadRequest(_) => tonic::Status::invalid_argument(message),
            ApiError::NotFound(_) => tonic::Status::not_found(message),
            ApiError::Unauthorized => tonic::Status::unauthenticated(message),
            ApiError::Unavailable(_) => tonic::Status::unavailable(message),
        }
    }
}

/// Shorthand for a 400 with a formatted message.
pub(crate) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}
