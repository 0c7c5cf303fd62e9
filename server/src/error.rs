//! The one mapping from krio's errors to gRPC status codes. The kubelet
//! branches on these codes, so each failure picks its code here.

/// An error that an RPC answers with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; the message says which field and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// The object the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The object already exists (or its name is reserved).
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is in a state that does not allow this.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The operation ran out of its time.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A registry or another service krio depends on is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// A registry refused the credentials (or wants some).
    #[error("{0}")]
    Unauthenticated(String),
    /// The RPC is not implemented by this version of krio.
    #[error("{service}/{rpc} is not implemented by krio {version} yet")]
    Unimplemented {
        /// `RuntimeService` or `ImageService`.
        service: &'static str,
        /// The RPC's name.
        rpc: &'static str,
        /// krio's version.
        version: &'static str,
    },
    /// A feature krio cannot offer (here, or at all); the message says what
    /// is missing.
    #[error("{0}")]
    Unsupported(String),
    /// Something failed inside krio.
    #[error("{context}: {source}")]
    Internal {
        /// What krio was doing.
        context: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// An RPC that has not landed yet.
    pub fn unimplemented(service: &'static str, rpc: &'static str) -> Self {
        Error::Unimplemented {
            service,
            rpc,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// An internal failure with what krio was doing.
    pub fn internal(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Internal {
            context: context.into(),
            source: source.into(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        match err {
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            Error::NotFound(_) => tonic::Status::not_found(message),
            Error::AlreadyExists(_) => tonic::Status::already_exists(message),
            Error::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            Error::Unavailable(_) => tonic::Status::unavailable(message),
            Error::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            Error::DeadlineExceeded(_) => tonic::Status::deadline_exceeded(message),
            Error::Unimplemented { .. } | Error::Unsupported(_) => {
                tonic::Status::unimplemented(message)
            }
            Error::Internal { .. } => {
                tracing::error!(error = %message, "internal error");
                tonic::Status::internal(message)
            }
        }
    }
}

impl From<krio_image::ImageError> for Error {
    fn from(err: krio_image::ImageError) -> Self {
        use krio_image::ErrorKind;
        // The causes too: "pulling X" alone does not say what to fix.
        let message = krio_image::pull::error_chain(&err);
        match err.kind() {
            ErrorKind::InvalidArgument => Error::InvalidArgument(message),
            ErrorKind::NotFound => Error::NotFound(message),
            ErrorKind::FailedPrecondition => Error::FailedPrecondition(message),
            ErrorKind::Registry => Error::Unavailable(message),
            ErrorKind::Unauthenticated => Error::Unauthenticated(message),
            ErrorKind::Internal => Error::internal("image store", err),
        }
    }
}

impl From<krio_runtime::spec::SpecError> for Error {
    fn from(err: krio_runtime::spec::SpecError) -> Self {
        use krio_runtime::spec::ErrorCode;
        let message = err.to_string();
        match err.code() {
            ErrorCode::InvalidArgument => Error::InvalidArgument(message),
            ErrorCode::NotFound => Error::NotFound(message),
            ErrorCode::FailedPrecondition => Error::FailedPrecondition(message),
            ErrorCode::Unimplemented => Error::Unimplemented {
                service: "RuntimeService",
                rpc: "CreateContainer (this container option)",
                version: env!("CARGO_PKG_VERSION"),
            },
            ErrorCode::Internal => Error::internal("generating the OCI spec", err),
        }
    }
}

/// The result of an RPC handler.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_code() {
        let cases = [
            (
                Error::InvalidArgument("x".into()),
                tonic::Code::InvalidArgument,
            ),
            (Error::NotFound("x".into()), tonic::Code::NotFound),
            (Error::AlreadyExists("x".into()), tonic::Code::AlreadyExists),
            (
                Error::FailedPrecondition("x".into()),
                tonic::Code::FailedPrecondition,
            ),
            (
                Error::unimplemented("RuntimeService", "Exec"),
                tonic::Code::Unimplemented,
            ),
            (
                Error::internal("doing y", std::io::Error::other("disk")),
                tonic::Code::Internal,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(tonic::Status::from(err).code(), code);
        }
    }

    #[test]
    fn unimplemented_names_the_rpc() {
        let status = tonic::Status::from(Error::unimplemented("RuntimeService", "RunPodSandbox"));
        assert!(status.message().contains("RuntimeService/RunPodSandbox"));
    }

    #[test]
    fn internal_keeps_the_cause() {
        let status = tonic::Status::from(Error::internal(
            "reading state",
            std::io::Error::other("disk full"),
        ));
        assert_eq!(status.message(), "reading state: disk full");
    }
}
