//! Telemetry: the metrics registry, the `/metrics` `/healthz` `/readyz`
//! endpoint, and tracing set-up.

pub mod http;
pub mod metrics;

/// Log output format.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("invalid log filter {filter:?}: {reason}")]
pub struct LogFilterError {
    filter: String,
    reason: String,
}

/// Installs the global tracing subscriber (logs to standard error).
pub fn init_tracing(filter: &str, format: LogFormat) -> Result<(), LogFilterError> {
    let env_filter =
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| LogFilterError {
            filter: filter.to_owned(),
            reason: e.to_string(),
        })?;
    // Colour only for a person at a terminal: a file, a pipe or journald
    // gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is not an error worth failing for.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}
