//! One configuration type, from defaults, a TOML file, environment variables
//! and command-line flags (each overriding the one before).
//!
//! ```toml
//! [executor]
//! execution_timeout_secs = 300
//! max_concurrent = 4
//! retry_attempts = 2
//!
//! [executor.breaker]               # the stake breaker
//! consecutive = 3                   # slashing verdicts in a row
//! hourly_limit = 15000000000000     # smallest unit: 15 UNIT an hour
//!
//! [sidecar]
//! endpoint = "http://127.0.0.1:50051"
//! auth_token_file = "/etc/nsn/sidecar.token"   # the sidecar's --auth-token-file
//!
//! [chain]
//! url = "ws://127.0.0.1:9944"
//! key_file = "/etc/nsn/lane1.key"
//! backend = "default"            # or "legacy" (chopsticks)
//! state_file = "/var/lib/nsn/lane1.block"
//!
//! [telemetry]
//! listen = "127.0.0.1:9615"
//! log = "info"
//! log_format = "text"
//! ```
//!
//! Environment: `NSN_LANE1_SIDECAR`, `NSN_LANE1_CHAIN`, `NSN_LANE1_KEY_FILE`,
//! `NSN_LANE1_CHAIN_BACKEND`, `NSN_LANE1_STATE_FILE`,
//! `NSN_LANE1_TELEMETRY_LISTEN`, `NSN_LANE1_MAX_CONCURRENT`,
//! `NSN_LANE1_EXECUTION_TIMEOUT_SECS`, `NSN_LANE1_LOG`,
//! `NSN_LANE1_SIDECAR_TOKEN_FILE`. Keys are never taken
//! from the command line or the config file's values directly: only the path
//! of a key file is.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::executor::ExecutorConfig;
use crate::sidecar::client::SidecarConfig;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("invalid {key}: {reason}")]
    Invalid {
        /// The setting (`section.key`, an environment variable or a flag).
        key: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// Executor settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorSection {
    /// Longest a task may run on the sidecar, in seconds.
    pub execution_timeout_secs: f64,
    /// Most tasks in flight at once.
    pub max_concurrent: usize,
    /// Retries of retryable sidecar errors.
    pub retry_attempts: usize,
    /// Retries of retryable chain submission errors.
    pub submit_retry_attempts: usize,
    /// Most tasks waiting.
    pub queue_capacity: usize,
    /// Seconds in-flight tasks get at shutdown.
    pub shutdown_grace_secs: f64,
    /// Claim candidates with `accept_assignment`.
    pub claim_assignments: bool,
    /// Preempt Lane 1 work when Lane 0 work appears on chain.
    pub preempt_on_lane0: bool,
    /// Tasks started ahead while the sidecar is busy (default: `max_concurrent`).
    pub prestart: Option<usize>,
    /// At shutdown, fail unfinished tasks with `Other` instead of leaving
    /// them assigned for the next start.
    pub fail_unfinished_on_shutdown: bool,
    /// Parameters sent with every run of a model, as JSON text by model id.
    pub model_parameters: std::collections::BTreeMap<String, String>,
    /// What is checked before a task is started.
    pub admission: AdmissionSection,
    /// When the stake breaker opens.
    pub breaker: BreakerSection,
}

/// Stake breaker settings (`[executor.breaker]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSection {
    /// Slashing verdicts in a row that open it (0: no such bound).
    pub consecutive: u32,
    /// The most the node's own slashing calls may cost within an hour
    /// (smallest unit).
    pub hourly_limit: u128,
    /// What one slashing call costs (smallest unit).
    pub slash: u128,
}

impl Default for BreakerSection {
    fn default() -> Self {
        let d = crate::breaker::BreakerPolicy::default();
        BreakerSection {
            consecutive: d.consecutive,
            hourly_limit: d.hourly_limit,
            slash: d.slash,
        }
    }
}

/// Admission settings (`[executor.admission]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionSection {
    /// The chain's block time, in seconds.
    pub block_time_secs: f64,
    /// Blocks kept free after a run for `submit_result` to land.
    pub submission_margin: u32,
    /// The least escrow the node works for (smallest unit).
    pub min_escrow: u128,
}

impl Default for AdmissionSection {
    fn default() -> Self {
        let d = crate::admission::AdmissionPolicy::default();
        AdmissionSection {
            block_time_secs: d.block_time.as_secs_f64(),
            submission_margin: d.submission_margin,
            min_escrow: d.min_escrow,
        }
    }
}

impl Default for ExecutorSection {
    fn default() -> Self {
        let d = ExecutorConfig::default();
        ExecutorSection {
            execution_timeout_secs: d.execution_timeout.as_secs_f64(),
            max_concurrent: d.max_concurrent,
            retry_attempts: d.retry_attempts,
            submit_retry_attempts: d.submit_retry_attempts,
            queue_capacity: d.queue_capacity,
            shutdown_grace_secs: d.shutdown_grace.as_secs_f64(),
            claim_assignments: d.claim_assignments,
            preempt_on_lane0: d.preempt_on_lane0,
            prestart: d.prestart,
            fail_unfinished_on_shutdown: d.fail_unfinished_on_shutdown,
            model_parameters: Default::default(),
            admission: AdmissionSection::default(),
            breaker: BreakerSection::default(),
        }
    }
}

/// Sidecar settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SidecarSection {
    /// The sidecar's URI.
    pub endpoint: String,
    /// Connect timeout, milliseconds.
    pub connect_timeout_ms: u64,
    /// How long to wait for a cancel to be confirmed, milliseconds.
    pub cancel_wait_ms: u64,
    /// A file holding the node's credential for the sidecar (a bearer
    /// token; the sidecar is started with the same file).
    pub auth_token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the sidecar's certificate: TLS to
    /// the sidecar (an `https://` endpoint; needs the `tls` feature).
    pub tls_ca_file: Option<PathBuf>,
    /// The name the sidecar's certificate is checked against (default:
    /// the endpoint's host).
    pub tls_domain: Option<String>,
    /// Runs it takes at once (default: the executor's `max_concurrent`
    /// shared out between the sidecars).
    pub capacity: Option<usize>,
    /// It serves Lane 0: Lane 0 work preempts the Lane 1 runs on it
    /// (default). `false`: its Lane 1 runs go on while Lane 0 work is open.
    pub lane0: bool,
}

impl Default for SidecarSection {
    fn default() -> Self {
        SidecarSection {
            endpoint: "http://127.0.0.1:50051".into(),
            connect_timeout_ms: 5_000,
            cancel_wait_ms: 10_000,
            auth_token_file: None,
            tls_ca_file: None,
            tls_domain: None,
            capacity: None,
            lane0: true,
        }
    }
}

/// Chain settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChainSection {
    /// The node's WebSocket URL.
    pub url: Option<String>,
    /// A file holding the signer's secret URI or mnemonic.
    pub key_file: Option<PathBuf>,
    /// The RPC backend: `default` for real nodes, `legacy` for chopsticks.
    pub backend: ChainBackend,
    /// Where the last handled finalized block is kept, so that a restart
    /// backfills the blocks it missed (`None`: start at the head).
    pub state_file: Option<PathBuf>,
}

/// Which RPC interface the chain client speaks.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChainBackend {
    /// subxt's default backend (new JSON-RPC interface, legacy fallback).
    #[default]
    Default,
    /// The legacy RPC methods only (needed for chopsticks).
    Legacy,
}

impl std::str::FromStr for ChainBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "default" => Ok(ChainBackend::Default),
            "legacy" => Ok(ChainBackend::Legacy),
            other => Err(format!(
                "unknown chain backend {other:?} (expected \"default\" or \"legacy\")"
            )),
        }
    }
}

pub use crate::telemetry::LogFormat;

/// Telemetry settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`None`: not served).
    pub listen: Option<SocketAddr>,
    /// Log filter (`info`, `nsn_lane1=debug`, …).
    pub log: String,
    /// Log format.
    pub log_format: LogFormat,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9615))),
            log: "info".into(),
            log_format: LogFormat::Text,
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Executor settings.
    pub executor: ExecutorSection,
    /// Sidecar settings (the node's one sidecar, and the defaults of each
    /// entry of `sidecars`).
    pub sidecar: SidecarSection,
    /// Several sidecars (`[[sidecars]]` entries): when given, the node runs
    /// on these instead of `[sidecar]`.
    pub sidecars: Vec<SidecarSection>,
    /// Chain settings.
    pub chain: ChainSection,
    /// Telemetry settings.
    pub telemetry: TelemetrySection,
}

impl Config {
    /// Parses TOML text (`origin` names it in errors).
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim().to_owned(),
        })
    }

    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Applies environment variables (through `get`, so tests need not touch
    /// the process environment).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("NSN_LANE1_SIDECAR") {
            self.sidecar.endpoint = v;
        }
        if let Some(v) = get("NSN_LANE1_CHAIN") {
            self.chain.url = Some(v);
        }
        if let Some(v) = get("NSN_LANE1_KEY_FILE") {
            self.chain.key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("NSN_LANE1_CHAIN_BACKEND") {
            self.chain.backend = v
                .parse()
                .map_err(|e| invalid("NSN_LANE1_CHAIN_BACKEND", e))?;
        }
        if let Some(v) = get("NSN_LANE1_STATE_FILE") {
            self.chain.state_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("NSN_LANE1_TELEMETRY_LISTEN") {
            self.telemetry.listen = Some(
                v.parse()
                    .map_err(|e| invalid("NSN_LANE1_TELEMETRY_LISTEN", format!("{v:?}: {e}")))?,
            );
        }
        if let Some(v) = get("NSN_LANE1_MAX_CONCURRENT") {
            self.executor.max_concurrent = v
                .parse()
                .map_err(|e| invalid("NSN_LANE1_MAX_CONCURRENT", format!("{v:?}: {e}")))?;
        }
        if let Some(v) = get("NSN_LANE1_EXECUTION_TIMEOUT_SECS") {
            self.executor.execution_timeout_secs = v
                .parse()
                .map_err(|e| invalid("NSN_LANE1_EXECUTION_TIMEOUT_SECS", format!("{v:?}: {e}")))?;
        }
        if let Some(v) = get("NSN_LANE1_LOG") {
            self.telemetry.log = v;
        }
        if let Some(v) = get("NSN_LANE1_SIDECAR_TOKEN_FILE") {
            self.sidecar.auth_token_file = Some(PathBuf::from(v));
        }
        Ok(())
    }

    /// Checks every value and builds the executor's settings.
    pub fn executor_config(&self) -> Result<ExecutorConfig, ConfigError> {
        let e = &self.executor;
        if e.max_concurrent == 0 {
            return Err(invalid("executor.max_concurrent", "must be at least 1"));
        }
        if e.queue_capacity == 0 {
            return Err(invalid("executor.queue_capacity", "must be at least 1"));
        }
        let mut model_parameters = std::collections::BTreeMap::new();
        for (model, json) in &e.model_parameters {
            let key = format!("executor.model_parameters.{model}");
            let id =
                crate::task::ModelId::new(model).map_err(|err| invalid(&key, err.to_string()))?;
            let parameters =
                crate::sidecar::client::Parameters::from_bytes(json.as_bytes().to_vec())
                    .map_err(|err| invalid(&key, err.to_string()))?;
            model_parameters.insert(id, parameters);
        }
        Ok(ExecutorConfig {
            execution_timeout: seconds(
                "executor.execution_timeout_secs",
                e.execution_timeout_secs,
            )?,
            max_concurrent: e.max_concurrent,
            retry_attempts: e.retry_attempts,
            submit_retry_attempts: e.submit_retry_attempts,
            queue_capacity: e.queue_capacity,
            shutdown_grace: seconds("executor.shutdown_grace_secs", e.shutdown_grace_secs)?,
            claim_assignments: e.claim_assignments,
            preempt_on_lane0: e.preempt_on_lane0,
            prestart: e.prestart,
            fail_unfinished_on_shutdown: e.fail_unfinished_on_shutdown,
            model_parameters,
            admission: crate::admission::AdmissionPolicy {
                block_time: seconds(
                    "executor.admission.block_time_secs",
                    e.admission.block_time_secs,
                )?,
                submission_margin: e.admission.submission_margin,
                min_escrow: e.admission.min_escrow,
            },
            breaker: crate::breaker::BreakerPolicy {
                consecutive: e.breaker.consecutive,
                hourly_limit: e.breaker.hourly_limit,
                slash: e.breaker.slash,
            },
            ..ExecutorConfig::default()
        })
    }

    /// The sidecar client's settings.
    pub fn sidecar_config(&self) -> Result<SidecarConfig, ConfigError> {
        sidecar_config_of(&self.sidecar, "sidecar")
    }

    /// Every sidecar's client settings and capacity: the `[[sidecars]]`
    /// entries, or the one `[sidecar]`. A capacity not given is the
    /// executor's `max_concurrent` shared out (rounded up).
    pub fn sidecar_set_configs(&self) -> Result<Vec<(SidecarConfig, usize, bool)>, ConfigError> {
        let entries: Vec<(&SidecarSection, String)> = if self.sidecars.is_empty() {
            vec![(&self.sidecar, "sidecar".to_owned())]
        } else {
            self.sidecars
                .iter()
                .enumerate()
                .map(|(i, s)| (s, format!("sidecars[{i}]")))
                .collect()
        };
        let share = self.executor.max_concurrent.div_ceil(entries.len()).max(1);
        entries
            .into_iter()
            .map(|(s, key)| {
                let capacity = match s.capacity {
                    Some(0) => {
                        return Err(invalid(&format!("{key}.capacity"), "must be at least 1"));
                    }
                    Some(n) => n,
                    None => share,
                };
                Ok((sidecar_config_of(s, &key)?, capacity, s.lane0))
            })
            .collect()
    }
}

/// One sidecar's client settings; `key` names its section in errors.
fn sidecar_config_of(s: &SidecarSection, key: &str) -> Result<SidecarConfig, ConfigError> {
    let invalid = |field: &str, why: String| invalid(&format!("{key}.{field}"), why);
    if s.endpoint.is_empty() {
        return Err(invalid("endpoint", "is empty".into()));
    }
    let mut c = SidecarConfig::new(s.endpoint.clone());
    c.connect_timeout = Duration::from_millis(s.connect_timeout_ms);
    c.cancel_wait = Duration::from_millis(s.cancel_wait_ms);
    if let Some(path) = &s.auth_token_file {
        c.auth_token = Some(
            crate::sidecar::client::AuthToken::from_file(path)
                .map_err(|e| invalid("auth_token_file", e.to_string()))?,
        );
    }
    if let Some(path) = &s.tls_ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| invalid("tls_ca_file", format!("{}: {e}", path.display())))?;
        c.tls = Some(crate::sidecar::client::TlsConfig {
            ca_certificate_pem: pem,
            domain: s.tls_domain.clone(),
        });
    }
    Ok(c)
}

/// Refuses a plain `ws://` (or `http://`) chain URL to a host that is not
/// on this machine, unless `allow_insecure`: the node's calls and the
/// chain's answers would cross the network unauthenticated and in clear.
/// Decided from the URL alone, before any connection is made.
pub fn check_chain_url(url: &str, allow_insecure: bool) -> Result<(), ConfigError> {
    let bad = |reason: String| invalid("chain.url", reason);
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad(format!("{url:?} is not a URL (ws://, wss://)")))?;
    let secure = match scheme {
        "wss" | "https" => true,
        "ws" | "http" => false,
        other => return Err(bad(format!("{url:?}: scheme {other:?} is not ws or wss"))),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    if host.is_empty() {
        return Err(bad(format!("{url:?} names no host")));
    }
    let local = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !secure && !local && !allow_insecure {
        return Err(bad(format!(
            "{url:?} is a plain-text connection to another host: use wss://, a node on this machine, or --allow-insecure-chain if you mean it"
        )));
    }
    Ok(())
}

fn seconds(key: &str, v: f64) -> Result<Duration, ConfigError> {
    if !v.is_finite() || v <= 0.0 || v > 1e9 {
        return Err(invalid(
            key,
            format!("{v} is not a positive number of seconds"),
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_original_plan() {
        let c = Config::default().executor_config().unwrap();
        assert_eq!(c.execution_timeout, Duration::from_secs(300));
        assert_eq!(c.max_concurrent, 1);
        assert_eq!(c.retry_attempts, 0);
        assert_eq!(
            Config::default().telemetry.listen,
            Some("127.0.0.1:9615".parse().unwrap()),
            "telemetry binds to loopback by default"
        );
    }

    #[test]
    fn file_then_env() {
        let mut c = Config::from_toml(
            "[executor]\nmax_concurrent = 4\nexecution_timeout_secs = 12.5\n[sidecar]\nendpoint = \"http://10.0.0.2:1\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        c.apply_env(|k| (k == "NSN_LANE1_MAX_CONCURRENT").then(|| "8".to_owned()))
            .unwrap();
        let e = c.executor_config().unwrap();
        assert_eq!(e.max_concurrent, 8);
        assert_eq!(e.execution_timeout, Duration::from_millis(12_500));
        assert_eq!(c.sidecar_config().unwrap().endpoint, "http://10.0.0.2:1");
    }

    #[test]
    fn chain_backend_and_state_file_come_from_file_or_env() {
        let c = Config::default();
        assert_eq!(
            c.chain.backend,
            ChainBackend::Default,
            "real nodes by default"
        );
        assert_eq!(c.chain.state_file, None);
        let mut c = Config::from_toml(
            "[chain]\nbackend = \"legacy\"\nstate_file = \"lane1.block\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.chain.backend, ChainBackend::Legacy);
        assert_eq!(c.chain.state_file, Some(PathBuf::from("lane1.block")));
        c.apply_env(|k| (k == "NSN_LANE1_CHAIN_BACKEND").then(|| "default".to_owned()))
            .unwrap();
        assert_eq!(c.chain.backend, ChainBackend::Default);
        let err = c
            .apply_env(|k| (k == "NSN_LANE1_CHAIN_BACKEND").then(|| "light".to_owned()))
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown chain backend \"light\""),
            "{err}"
        );
        assert!(Config::from_toml("[chain]\nbackend = \"light\"\n", Path::new("d.toml")).is_err());
    }

    #[test]
    fn a_plain_chain_url_to_another_host_is_refused() {
        for ok in [
            "ws://127.0.0.1:9944",
            "ws://localhost:9944",
            "ws://[::1]:9944/",
            "wss://rpc.example.org",
            "wss://10.0.0.5:443/ws",
            "http://127.0.0.2:9933",
        ] {
            assert!(check_chain_url(ok, false).is_ok(), "{ok}");
        }
        for refused in [
            "ws://10.0.0.5:9944",
            "ws://rpc.example.org",
            "ws://user@10.1.1.1:1/x",
            "ws://[2001:db8::1]:9944",
        ] {
            let e = check_chain_url(refused, false).unwrap_err().to_string();
            assert!(e.contains("--allow-insecure-chain"), "{refused}: {e}");
            assert!(check_chain_url(refused, true).is_ok(), "{refused}");
        }
        for malformed in ["10.0.0.5:9944", "ftp://x", "ws://", "ws:///x"] {
            assert!(check_chain_url(malformed, true).is_err(), "{malformed}");
        }
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let err = Config::from_toml("[executor]\nmax_concurent = 4\n", Path::new("bad.toml"))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("config file bad.toml:"), "{msg}");
        assert!(msg.contains("max_concurent"), "{msg}");
        let err = Config::from_toml(
            "[executor]\nmax_concurrent = \"four\"\n",
            Path::new("b.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");

        let mut c = Config::default();
        c.executor.max_concurrent = 0;
        assert_eq!(
            c.executor_config().unwrap_err().to_string(),
            "invalid executor.max_concurrent: must be at least 1"
        );
        let mut c = Config::default();
        c.executor.execution_timeout_secs = -1.0;
        assert!(c.executor_config().is_err());
        let mut c = Config::default();
        let err = c
            .apply_env(|k| (k == "NSN_LANE1_TELEMETRY_LISTEN").then(|| "nowhere".to_owned()))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid NSN_LANE1_TELEMETRY_LISTEN"),
            "{err}"
        );
        assert!(matches!(
            Config::from_file(Path::new("/nonexistent/nsn.toml")),
            Err(ConfigError::Read { .. })
        ));
    }
}
