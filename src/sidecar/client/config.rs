//! How to reach the sidecar, and why a client could not be built.

use std::time::Duration;

/// How to reach the sidecar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarConfig {
    /// Its URI, e.g. `http://127.0.0.1:50051`.
    pub endpoint: String,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// HTTP/2 keep-alive ping interval (`None`: no pings).
    pub keep_alive_interval: Option<Duration>,
    /// How long to wait for a keep-alive answer before the connection is
    /// considered dead.
    pub keep_alive_timeout: Duration,
    /// Added to a task's timeout to make the call's deadline, so the
    /// sidecar's own timeout answer can arrive first.
    pub timeout_grace: Duration,
    /// How long [`SidecarClient::cancel`](super::SidecarClient::cancel)
    /// waits, all in all, for the sidecar to report the task stopped.
    pub cancel_wait: Duration,
    /// How long the stack's layers, having cancelled a run, wait for the
    /// run's own answer (its `ExecuteTask` call ending) before they ask the
    /// sidecar for its status: the answer is the first proof that it
    /// stopped, status polling the fallback (NSN's sidecar only marks a
    /// cancelled run and lets the model go on).
    pub cancel_answer_wait: Duration,
    /// The deadline of every call but `ExecuteTask` (status, cancel,
    /// capabilities, health): a sidecar that accepts connections and never
    /// answers holds nothing longer than this.
    pub call_timeout: Duration,
    /// TLS, for a sidecar that is not on the same host.
    pub tls: Option<TlsConfig>,
    /// The node's credential, sent with every call as
    /// `authorization: Bearer <token>` (a sidecar started with
    /// `--auth-token-file` refuses calls without it).
    pub auth_token: Option<AuthToken>,
}

/// A bearer token shared by the node and its sidecar. It is never printed:
/// its `Debug` shows only that there is one.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(String);

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(..)")
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthTokenError {
    /// The token file could not be read.
    #[error("token file {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The token is empty or holds characters a header cannot carry.
    #[error("token {origin}: it must be 16 to 4096 visible ASCII characters (no spaces)")]
    Malformed {
        /// Where it came from.
        origin: String,
    },
}

impl AuthToken {
    /// A token from text (surrounding white space is dropped): 16 to 4096
    /// visible ASCII characters.
    pub fn new(text: &str, origin: impl Into<String>) -> Result<Self, AuthTokenError> {
        let t = text.trim();
        if !(16..=4096).contains(&t.len()) || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AuthTokenError::Malformed {
                origin: origin.into(),
            });
        }
        Ok(AuthToken(t.to_owned()))
    }

    /// The token held in a file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, AuthTokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthTokenError::Io {
            path: path.to_owned(),
            source,
        })?;
        AuthToken::new(&text, format!("file {}", path.display()))
    }

    /// The `authorization` header value it makes.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// True when `header` (an `authorization` value) carries this token;
    /// compared in time that does not depend on where they differ.
    pub fn admits(&self, header: &[u8]) -> bool {
        let want = self.bearer();
        let want = want.as_bytes();
        let diff = want.len() ^ header.len();
        let folded = want
            .iter()
            .zip(header.iter().chain(std::iter::repeat(&0)))
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0 && folded == 0
    }
}

/// TLS settings for the sidecar connection (needs the crate's `tls` feature).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM of the CA that signed the sidecar's certificate (system roots are
    /// not consulted).
    pub ca_certificate_pem: Vec<u8>,
    /// The name to check the certificate against (default: the endpoint's host).
    pub domain: Option<String>,
}

impl SidecarConfig {
    /// Defaults for a sidecar at `endpoint`: 5 s connect timeout, 30 s
    /// keep-alive pings with a 10 s answer timeout, 2 s deadline grace, 10 s
    /// cancel wait, 5 s for other calls, no TLS.
    pub fn new(endpoint: impl Into<String>) -> Self {
        SidecarConfig {
            endpoint: endpoint.into(),
            connect_timeout: Duration::from_secs(5),
            keep_alive_interval: Some(Duration::from_secs(30)),
            keep_alive_timeout: Duration::from_secs(10),
            timeout_grace: Duration::from_secs(2),
            cancel_wait: Duration::from_secs(10),
            cancel_answer_wait: Duration::from_millis(250),
            call_timeout: Duration::from_secs(5),
            tls: None,
            auth_token: None,
        }
    }
}

/// Why a sidecar client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SidecarConfigError {
    /// The endpoint is not a usable URI.
    #[error("invalid sidecar endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS was asked for, but this build has no TLS support.
    #[error("TLS was configured but nsn-lane1 was built without the `tls` feature")]
    TlsUnavailable,
    /// The TLS settings were refused.
    #[error("invalid TLS settings: {0}")]
    Tls(String),
    /// The credential cannot be sent as a header.
    #[error("the sidecar credential cannot be sent as a header")]
    InvalidToken,
    /// The client must be created inside a tokio runtime.
    #[error("the sidecar client must be created inside a tokio runtime")]
    NoRuntime,
}
