//! The engine's one error enum.

pub use lance_namespace::ErrorCode as NamespaceCode;
use lancefleet_common::ServiceError;
use lancefleet_proto::ErrorCode;

/// Everything that can go wrong in the engine, each variant with its service code.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No table of that name exists.
    #[error("Table '{name}' was not found")]
    TableNotFound {
        /// The table id as the client wrote it.
        name: String,
    },
    /// A table of that name exists already. The wording matters: LanceDB clients look for
    /// "already exists" in a 400 body.
    #[error("Table '{name}' already exists")]
    TableAlreadyExists {
        /// The table id as the client wrote it.
        name: String,
    },
    /// The table exists but not at the version asked for.
    #[error("Table '{name}' (version: {version}) was not found")]
    VersionNotFound {
        /// The table id.
        name: String,
        /// The missing version.
        version: u64,
    },
    /// The client asked for a version newer than the newest committed one.
    #[error("table '{name}' is at version {latest}, older than the requested minimum version {requested}")]
    VersionNotYetVisible {
        /// The table id.
        name: String,
        /// The newest version this node can see.
        latest: u64,
        /// The minimum version the client asked for.
        requested: u64,
    },
    /// No namespace of this name.
    #[error("Namespace '{name}' was not found")]
    NamespaceNotFound {
        /// The namespace id.
        name: String,
    },
    /// Creating a namespace that exists.
    #[error("Namespace '{name}' already exists")]
    NamespaceAlreadyExists {
        /// The namespace id.
        name: String,
    },
    /// Creating an index under a name an index of the table has, without replacing it.
    #[error("Index '{name}' already exists; give another name or replace it")]
    IndexAlreadyExists {
        /// The index name.
        name: String,
    },
    /// Dropping a namespace that still holds tables or namespaces, without cascading.
    #[error(
        "namespace '{name}' is not empty ({tables} tables, {namespaces} namespaces); drop them first or use behavior CASCADE"
    )]
    NamespaceNotEmpty {
        /// The namespace id.
        name: String,
        /// How many tables it holds.
        tables: usize,
        /// How many namespaces it holds.
        namespaces: usize,
    },
    /// A table or namespace name that cannot be used.
    #[error("invalid table name '{name}': {reason}")]
    InvalidName {
        /// The name as received.
        name: String,
        /// What rule it breaks.
        reason: String,
    },
    /// The request is malformed: bad filter, wrong vector size, schema mismatch, bad Arrow.
    #[error("{message}")]
    InvalidInput {
        /// What is wrong, for the client.
        message: String,
    },
    /// A valid request for something this server does not implement yet.
    #[error("{message}")]
    NotSupported {
        /// What is not supported.
        message: String,
    },
    /// An error raised by lance, classified by [`classify_lance_error`].
    #[error("{message}")]
    Lance {
        /// The code the lance error maps to.
        code: ErrorCode,
        /// The message without lance's source locations.
        message: String,
        /// The original error, kept for logs.
        #[source]
        source: Box<lance::Error>,
    },
    /// A storage failure outside lance (listing, removing directories).
    #[error("storage error: {0}")]
    Storage(#[from] std::io::Error),
    /// An Arrow kernel failed on data the engine produced itself.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A broken invariant of the engine itself.
    #[error("{message}")]
    Internal {
        /// What went wrong, for the logs.
        message: String,
    },
}

/// Shorthand for engine results.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    /// An [`EngineError::InvalidInput`] with `message`.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput { message: message.into() }
    }

    /// An [`EngineError::Internal`] with `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal { message: message.into() }
    }

    /// Whether a commit lost to concurrent commits (a conflict, or lance's retry budget
    /// ran out while other writers kept winning): nothing was committed, and the
    /// operation may be planned again on the newer version.
    pub fn is_commit_conflict(&self) -> bool {
        matches!(
            self,
            Self::Lance { source, .. } if matches!(
                **source,
                lance::Error::CommitConflict { .. }
                    | lance::Error::RetryableCommitConflict { .. }
                    | lance::Error::IncompatibleTransaction { .. }
                    | lance::Error::TooMuchWriteContention { .. }
            )
        )
    }
}

impl EngineError {
    /// The Lance Namespace specification's code of this error (the `code` of its JSON
    /// error body): finer than [`ErrorCode`], it says *what* was not found or exists.
    pub fn namespace_code(&self) -> NamespaceCode {
        use lance::Error as E;
        match self {
            Self::TableNotFound { .. } => NamespaceCode::TableNotFound,
            Self::TableAlreadyExists { .. } => NamespaceCode::TableAlreadyExists,
            Self::VersionNotFound { .. } => NamespaceCode::TableVersionNotFound,
            Self::NamespaceNotFound { .. } => NamespaceCode::NamespaceNotFound,
            Self::NamespaceAlreadyExists { .. } => NamespaceCode::NamespaceAlreadyExists,
            Self::NamespaceNotEmpty { .. } => NamespaceCode::NamespaceNotEmpty,
            Self::IndexAlreadyExists { .. } => NamespaceCode::TableIndexAlreadyExists,
            Self::Lance { source, .. } => match **source {
                E::DatasetNotFound { .. } => NamespaceCode::TableNotFound,
                E::DatasetAlreadyExists { .. } => NamespaceCode::TableAlreadyExists,
                E::IndexNotFound { .. } => NamespaceCode::TableIndexNotFound,
                E::RefNotFound { .. } => NamespaceCode::TableTagNotFound,
                E::RefConflict { .. } => NamespaceCode::TableTagAlreadyExists,
                E::VersionNotFound { .. } => NamespaceCode::TableVersionNotFound,
                E::FieldNotFound { .. } => NamespaceCode::TableColumnNotFound,
                _ => namespace_code_of(self.error_code()),
            },
            _ => namespace_code_of(self.error_code()),
        }
    }
}

/// The Lance Namespace specification's code for an error known only by its service
/// `code`: the table's, where the code does not say what is missing or exists.
pub fn namespace_code_of(code: ErrorCode) -> NamespaceCode {
    match code {
        ErrorCode::InvalidArgument => NamespaceCode::InvalidInput,
        ErrorCode::NotFound => NamespaceCode::TableNotFound,
        ErrorCode::AlreadyExists => NamespaceCode::TableAlreadyExists,
        ErrorCode::Conflict => NamespaceCode::ConcurrentModification,
        ErrorCode::NotSupported => NamespaceCode::Unsupported,
        ErrorCode::Unauthenticated => NamespaceCode::Unauthenticated,
        ErrorCode::PermissionDenied => NamespaceCode::PermissionDenied,
        ErrorCode::Unavailable | ErrorCode::Timeout => NamespaceCode::ServiceUnavailable,
        ErrorCode::Unspecified | ErrorCode::Internal => NamespaceCode::Internal,
    }
}

impl From<lance::Error> for EngineError {
    fn from(error: lance::Error) -> Self {
        let (code, message) = classify_lance_error(&error);
        Self::Lance { code, message, source: Box::new(error) }
    }
}

impl ServiceError for EngineError {
    fn error_code(&self) -> ErrorCode {
        match self {
            Self::TableNotFound { .. } | Self::VersionNotFound { .. } | Self::NamespaceNotFound { .. } => {
                ErrorCode::NotFound
            }
            Self::TableAlreadyExists { .. } | Self::NamespaceAlreadyExists { .. } | Self::IndexAlreadyExists { .. } => {
                ErrorCode::AlreadyExists
            }
            // 400, as before the namespace code said what it is (the clients read both).
            Self::NamespaceNotEmpty { .. } => ErrorCode::InvalidArgument,
            Self::VersionNotYetVisible { .. } => ErrorCode::Unavailable,
            Self::InvalidName { .. } | Self::InvalidInput { .. } => ErrorCode::InvalidArgument,
            Self::NotSupported { .. } => ErrorCode::NotSupported,
            Self::Lance { code, .. } => *code,
            Self::Storage(_) | Self::Arrow(_) | Self::Internal { .. } => ErrorCode::Internal,
        }
    }

    fn client_message(&self) -> String {
        match self.error_code() {
            ErrorCode::Internal => "internal server error; the server log has the details".to_string(),
            _ => self.to_string(),
        }
    }
}

/// Maps a lance error to a service code and a message fit for clients.
///
/// Lance's `Display` appends source locations (`…, lance-core/src/error.rs:12:5`); the
/// message here keeps only what describes the problem (see [`client_text`]).
pub fn classify_lance_error(error: &lance::Error) -> (ErrorCode, String) {
    let (code, message) = classify(error);
    (code, client_text(&message))
}

/// `message` without what only the server's operators should see: source locations of
/// the code that raised a nested error (`…, /root/.cargo/registry/…/planner.rs:1100:20`)
/// and lance's dumps of a whole schema (`…: Schema { fields: [Field { … }, …] }`).
pub fn client_text(message: &str) -> String {
    let message = message.find(": Schema {").map_or(message, |at| &message[..at]);
    let mut text = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(".rs:") {
        let start = rest[..at].rfind([' ', '(']).map_or(0, |space| space + 1);
        let digits = rest[at + 4..].find(|c: char| !c.is_ascii_digit() && c != ':').unwrap_or(rest.len() - at - 4);
        let end = at + 4 + digits;
        if rest[start..at].contains('/') {
            let before = &rest[..start];
            text.push_str(before.strip_suffix(", ").unwrap_or(before));
        } else {
            text.push_str(&rest[..end]);
        }
        rest = &rest[end..];
    }
    text.push_str(rest);
    text
}

fn classify(error: &lance::Error) -> (ErrorCode, String) {
    use lance::Error as E;
    match error {
        E::InvalidInput { source, .. } => (ErrorCode::InvalidArgument, source.to_string()),
        E::SchemaMismatch { difference, .. } => {
            (ErrorCode::InvalidArgument, format!("the data does not match the table schema: {difference}"))
        }
        E::Schema { message, .. } => (ErrorCode::InvalidArgument, message.clone()),
        E::FieldNotFound { source } => (ErrorCode::InvalidArgument, source.to_string()),
        E::DatasetAlreadyExists { uri, .. } => (ErrorCode::AlreadyExists, format!("dataset {uri} already exists")),
        E::DatasetNotFound { path, .. } => (ErrorCode::NotFound, format!("dataset {path} was not found")),
        E::NotFound { uri, .. } => (ErrorCode::NotFound, format!("{uri} was not found")),
        E::IndexNotFound { identity, .. } => (ErrorCode::NotFound, format!("index {identity} was not found")),
        E::VersionNotFound { message } | E::RefNotFound { message } => (ErrorCode::NotFound, message.clone()),
        E::InvalidRef { message } => (ErrorCode::InvalidArgument, message.clone()),
        E::RefConflict { message } => (ErrorCode::AlreadyExists, message.clone()),
        E::NotSupported { source, .. } => (ErrorCode::NotSupported, source.to_string()),
        E::CommitConflict { version, source, .. } => {
            (ErrorCode::Conflict, format!("commit conflict at version {version}: {source}"))
        }
        E::RetryableCommitConflict { version, source, .. } => {
            (ErrorCode::Conflict, format!("commit conflict at version {version}: {source}"))
        }
        E::TooMuchWriteContention { message, .. } => (ErrorCode::Unavailable, message.clone()),
        E::Timeout { message, .. } => (ErrorCode::Timeout, message.clone()),
        E::Arrow { message, .. } | E::Execution { message, .. } if is_value_error(message) => {
            (ErrorCode::InvalidArgument, value_error(message))
        }
        other => (ErrorCode::Internal, other.to_string()),
    }
}

/// Errors a query's own values cause when it runs (a cast that fails on some row, a
/// division by zero): the request's fault, not the server's.
const VALUE_ERRORS: [&str; 4] = ["Cast error", "Parser error", "Divide by zero", "Arithmetic overflow"];

fn is_value_error(message: &str) -> bool {
    VALUE_ERRORS.iter().any(|kind| message.contains(kind))
}

/// The part of `message` from the value error on (without the wrapping layers' prefixes).
fn value_error(message: &str) -> String {
    let start = VALUE_ERRORS.iter().filter_map(|kind| message.find(kind)).min().unwrap_or(0);
    message[start..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_whose_values_fail_is_the_requests_fault() {
        let error = EngineError::from(lance::Error::execution(
            "External error: Arrow error: Cast error: Cannot cast string 'abc' to value of Int64 type",
        ));
        assert_eq!(error.error_code(), ErrorCode::InvalidArgument);
        assert_eq!(error.client_message(), "Cast error: Cannot cast string 'abc' to value of Int64 type");
        let fault = EngineError::from(lance::Error::arrow("task panicked"));
        assert_eq!(fault.error_code(), ErrorCode::Internal);
    }

    #[test]
    fn not_found_errors_name_the_table() {
        let error = EngineError::TableNotFound { name: "docs".into() };
        assert_eq!(error.error_code().http_status(), 404);
        assert_eq!(error.client_message(), "Table 'docs' was not found");
    }

    #[test]
    fn already_exists_is_a_400_saying_already_exists() {
        let error = EngineError::TableAlreadyExists { name: "docs".into() };
        assert_eq!(error.error_code().http_status(), 400);
        assert!(error.client_message().contains("already exists"));
    }

    #[test]
    fn lance_input_errors_are_400_without_source_locations() {
        let error = EngineError::from(lance::Error::invalid_input("k must be positive"));
        assert_eq!(error.error_code(), ErrorCode::InvalidArgument);
        assert_eq!(error.client_message(), "k must be positive");
    }

    #[test]
    fn namespace_codes_say_what_is_missing_or_exists() {
        let code = |error: EngineError| error.namespace_code().as_u32();
        assert_eq!(code(EngineError::TableNotFound { name: "t".into() }), 4);
        assert_eq!(code(EngineError::TableAlreadyExists { name: "t".into() }), 5);
        assert_eq!(code(EngineError::VersionNotFound { name: "t".into(), version: 9 }), 11);
        assert_eq!(code(EngineError::NamespaceNotFound { name: "n".into() }), 1);
        assert_eq!(code(EngineError::NamespaceAlreadyExists { name: "n".into() }), 2);
        assert_eq!(code(EngineError::NamespaceNotEmpty { name: "n".into(), tables: 1, namespaces: 0 }), 3);
        assert_eq!(code(lance::Error::RefNotFound { message: "tag x".into() }.into()), 8);
        assert_eq!(code(lance::Error::RefConflict { message: "tag x".into() }.into()), 9);
        assert_eq!(code(EngineError::invalid_input("bad filter")), 13);
        assert_eq!(code(EngineError::internal("bug")), 18);
    }

    #[test]
    fn client_messages_carry_no_source_paths_or_schema_dumps() {
        let planner = "Error optimizing sql filter: text LIKE 3 (Invalid user input: no common type, \
            /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/lance-datafusion-14.0.2/src/planner.rs:1100:20)";
        assert_eq!(
            client_text(planner),
            "Error optimizing sql filter: text LIKE 3 (Invalid user input: no common type)"
        );
        let dump = "Column 'nope' does not exist in dataset schema: Schema { fields: [Field { name: \"id\" }] }";
        assert_eq!(client_text(dump), "Column 'nope' does not exist in dataset schema");
        let plain = "file a.rs: not a location; k must be positive";
        assert_eq!(client_text(plain), plain);
        let error = EngineError::from(lance::Error::invalid_input(planner));
        assert!(!error.client_message().contains(".cargo"), "{}", error.client_message());
    }

    #[test]
    fn internal_errors_hide_their_details_from_clients() {
        let error = EngineError::from(lance::Error::internal("checksum mismatch in file x"));
        assert_eq!(error.error_code().http_status(), 500);
        assert!(!error.client_message().contains("checksum"));
    }
}
