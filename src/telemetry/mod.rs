//! Telemetry: the metrics registry.

pub mod metrics;
