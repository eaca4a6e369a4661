//! The reference sidecar's built-in models: deterministic CPU programs that
//! need no weights, so the whole pipeline runs on any machine.
//!
//! | model | lanes | what it does | parameters (JSON object) |
//! |---|---|---|---|
//! | `noop` | 1 | returns its input (zero work) | none |
//! | `sha256` | 1 | the 32-byte SHA-256 digest of its input | none |
//! | `uppercase` | 1 | upper-cases UTF-8 text | none |
//! | `sleep` | 1 | waits, reporting progress, then returns its input | `duration_ms` (default 1000) |
//! | `fail` | 1 | always fails | `message` |
//! | `mandelbrot` | 1 | renders a grayscale PGM image of the Mandelbrot set, its view chosen by the input's hash | `width`, `height` (1–1024, default 64), `max_iter` (1–10000, default 256) |
//! | `video-render` | 0 | renders `frames` 32×32 PGM frames zooming into the set | `frames` (1–64, default 8) |
//!
//! Every long-running model checks its cancellation token between steps and
//! reports progress, so a cancel really stops the work.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::task::Lane;

/// What the sidecar tells clients about a model (`ListPlugins`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    /// Its id (the chain's renderer id).
    pub name: &'static str,
    /// Its version.
    pub version: &'static str,
    /// The lanes it serves.
    pub lanes: &'static [Lane],
    /// Whether its output depends only on its input and parameters.
    pub deterministic: bool,
    /// Its worst-case latency.
    pub max_latency_ms: u32,
    /// The VRAM it needs.
    pub vram_required_mb: u32,
}

const LANE1: &[Lane] = &[Lane::Lane1];
const LANE0: &[Lane] = &[Lane::Lane0];

/// The built-in models.
pub const BUILTIN: &[ModelSpec] = &[
    spec("noop", LANE1, 1_000),
    spec("sha256", LANE1, 1_000),
    spec("uppercase", LANE1, 1_000),
    spec("sleep", LANE1, 60_000),
    spec("fail", LANE1, 1_000),
    spec("mandelbrot", LANE1, 60_000),
    spec("video-render", LANE0, 10_000),
];

const fn spec(name: &'static str, lanes: &'static [Lane], max_latency_ms: u32) -> ModelSpec {
    ModelSpec {
        name,
        version: env!("CARGO_PKG_VERSION"),
        lanes,
        deterministic: true,
        max_latency_ms,
        vram_required_mb: 0,
    }
}

/// A built-in model by name.
pub fn find(name: &str) -> Option<&'static ModelSpec> {
    BUILTIN.iter().find(|m| m.name == name)
}

/// Why a model run did not produce an output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The parameters are not what the model takes.
    #[error("invalid parameters for {model}: {reason}")]
    InvalidParameters {
        /// The model.
        model: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The input is not what the model takes.
    #[error("invalid input for {model}: {reason}")]
    InvalidInput {
        /// The model.
        model: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The model failed.
    #[error("{0}")]
    Failed(String),
    /// The run was cancelled and has stopped.
    #[error("cancelled")]
    Cancelled,
}

/// Reports a run's progress: a fraction in 0–1 and a stage name.
pub type ProgressFn = Arc<dyn Fn(f32, &'static str) + Send + Sync>;

/// Runs a built-in model to completion, cancellation or failure.
pub async fn run(
    model: &'static ModelSpec,
    input: Arc<[u8]>,
    parameters: &[u8],
    cancel: CancellationToken,
    progress: ProgressFn,
) -> Result<Vec<u8>, ModelError> {
    let name = model.name;
    match name {
        "noop" => {
            no_params(name, parameters)?;
            Ok(input.to_vec())
        }
        "sha256" => {
            no_params(name, parameters)?;
            Ok(Sha256::digest(&input).to_vec())
        }
        "uppercase" => {
            no_params(name, parameters)?;
            let text = std::str::from_utf8(&input).map_err(|e| ModelError::InvalidInput {
                model: name,
                reason: format!("input is not UTF-8 text: {e}"),
            })?;
            Ok(text.to_uppercase().into_bytes())
        }
        "sleep" => {
            let p: SleepParams = params(name, parameters)?;
            sleep(p, input, cancel, progress).await
        }
        "fail" => {
            let p: FailParams = params(name, parameters)?;
            Err(ModelError::Failed(p.message.unwrap_or_else(|| {
                "the fail model always fails".to_owned()
            })))
        }
        "mandelbrot" => {
            let p: MandelbrotParams = params(name, parameters)?;
            let view = view_from(&input);
            blocking(cancel, move |cancel| {
                render(p.width, p.height, p.max_iter, view, cancel, &*progress)
            })
            .await
        }
        "video-render" => {
            let p: VideoParams = params(name, parameters)?;
            let view = view_from(&input);
            blocking(cancel, move |cancel| {
                let mut out = Vec::new();
                for frame in 0..p.frames {
                    let zoom = 1.0 / (1.0 + f64::from(frame) * 0.25);
                    let v = (view.0, view.1, view.2 * zoom);
                    let report = |_: f32, _: &'static str| {};
                    out.extend(render(32, 32, 128, v, cancel, &report)?);
                    progress((frame + 1) as f32 / p.frames as f32, "rendering frames");
                }
                Ok(out)
            })
            .await
        }
        other => Err(ModelError::Failed(format!("{other} has no implementation"))),
    }
}

fn params<T: for<'de> Deserialize<'de> + Default>(
    model: &'static str,
    bytes: &[u8],
) -> Result<T, ModelError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| ModelError::InvalidParameters {
        model,
        reason: e.to_string(),
    })
}

fn no_params(model: &'static str, bytes: &[u8]) -> Result<(), ModelError> {
    params::<NoParams>(model, bytes).map(|_| ())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepParams {
    #[serde(default = "default_sleep_ms")]
    duration_ms: u64,
}

impl Default for SleepParams {
    fn default() -> Self {
        SleepParams {
            duration_ms: default_sleep_ms(),
        }
    }
}

fn default_sleep_ms() -> u64 {
    1_000
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FailParams {
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MandelbrotParams {
    #[serde(default = "default_side", deserialize_with = "side")]
    width: u32,
    #[serde(default = "default_side", deserialize_with = "side")]
    height: u32,
    #[serde(default = "default_iter", deserialize_with = "iterations")]
    max_iter: u32,
}

impl Default for MandelbrotParams {
    fn default() -> Self {
        MandelbrotParams {
            width: default_side(),
            height: default_side(),
            max_iter: default_iter(),
        }
    }
}

fn default_side() -> u32 {
    64
}

fn default_iter() -> u32 {
    256
}

fn bounded<'de, D: serde::Deserializer<'de>>(d: D, max: u32) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v == 0 || v > max {
        return Err(serde::de::Error::custom(format!(
            "{v} is out of range 1..={max}"
        )));
    }
    Ok(v)
}

fn side<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded(d, 1024)
}

fn iterations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded(d, 10_000)
}

fn frames<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded(d, 64)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VideoParams {
    #[serde(default = "default_frames", deserialize_with = "frames")]
    frames: u32,
}

impl Default for VideoParams {
    fn default() -> Self {
        VideoParams {
            frames: default_frames(),
        }
    }
}

fn default_frames() -> u32 {
    8
}

async fn sleep(
    p: SleepParams,
    input: Arc<[u8]>,
    cancel: CancellationToken,
    progress: ProgressFn,
) -> Result<Vec<u8>, ModelError> {
    let total = Duration::from_millis(p.duration_ms);
    let steps = 20u32;
    let step = total / steps;
    // Each step ends at its own point in time, so the timer's granularity
    // does not add up over the steps: the run takes `duration_ms`.
    let start = tokio::time::Instant::now();
    progress(0.0, "sleeping");
    for i in 1..=steps {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(ModelError::Cancelled),
            () = tokio::time::sleep_until(start + step * i) => {
                progress(i as f32 / steps as f32, "sleeping");
            }
        }
    }
    Ok(input.to_vec())
}

/// Runs CPU work on the blocking pool. If this future is dropped, the token is
/// cancelled so the work stops instead of running on unobserved.
async fn blocking(
    cancel: CancellationToken,
    work: impl FnOnce(&CancellationToken) -> Result<Vec<u8>, ModelError> + Send + 'static,
) -> Result<Vec<u8>, ModelError> {
    let guard = cancel.clone().drop_guard();
    let handle = tokio::task::spawn_blocking(move || work(&cancel));
    let result = match handle.await {
        Ok(r) => r,
        Err(e) => Err(ModelError::Failed(format!("model worker died: {e}"))),
    };
    guard.disarm();
    result
}

/// A view of the set (centre x, centre y, half-width) picked by the input's hash.
fn view_from(input: &[u8]) -> (f64, f64, f64) {
    let h = Sha256::digest(input);
    let a = f64::from(u16::from_le_bytes([h[0], h[1]])) / f64::from(u16::MAX);
    let b = f64::from(u16::from_le_bytes([h[2], h[3]])) / f64::from(u16::MAX);
    (-0.75 + (a - 0.5) * 0.5, (b - 0.5) * 0.5, 1.5)
}

/// Renders a binary PGM (P5) image of the Mandelbrot set.
fn render(
    width: u32,
    height: u32,
    max_iter: u32,
    (cx, cy, half): (f64, f64, f64),
    cancel: &CancellationToken,
    progress: &dyn Fn(f32, &'static str),
) -> Result<Vec<u8>, ModelError> {
    let mut out = format!("P5\n{width} {height}\n255\n").into_bytes();
    out.reserve((width * height) as usize);
    let scale = 2.0 * half / f64::from(width.max(height));
    for row in 0..height {
        if cancel.is_cancelled() {
            return Err(ModelError::Cancelled);
        }
        let y0 = cy + (f64::from(row) - f64::from(height) / 2.0) * scale;
        for col in 0..width {
            let x0 = cx + (f64::from(col) - f64::from(width) / 2.0) * scale;
            let (mut x, mut y, mut i) = (0.0f64, 0.0f64, 0u32);
            while x * x + y * y <= 4.0 && i < max_iter {
                let xt = x * x - y * y + x0;
                y = 2.0 * x * y + y0;
                x = xt;
                i += 1;
            }
            out.push((u64::from(i) * 255 / u64::from(max_iter)) as u8);
        }
        progress((row + 1) as f32 / height as f32, "rendering");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> ProgressFn {
        Arc::new(|_, _| {})
    }

    async fn run_named(name: &str, input: &[u8], params: &str) -> Result<Vec<u8>, ModelError> {
        let model = find(name).unwrap();
        run(
            model,
            Arc::from(input),
            params.as_bytes(),
            CancellationToken::new(),
            quiet(),
        )
        .await
    }

    #[tokio::test]
    async fn simple_models() {
        assert_eq!(run_named("noop", b"abc", "").await.unwrap(), b"abc");
        assert_eq!(
            run_named("sha256", b"abc", "{}").await.unwrap(),
            Sha256::digest(b"abc").to_vec()
        );
        assert_eq!(run_named("uppercase", b"abc", "").await.unwrap(), b"ABC");
        assert!(matches!(
            run_named("uppercase", &[0xff], "").await,
            Err(ModelError::InvalidInput { .. })
        ));
        assert_eq!(
            run_named("fail", b"", r#"{"message":"boom"}"#).await,
            Err(ModelError::Failed("boom".into()))
        );
    }

    #[tokio::test]
    async fn bad_parameters_are_reported() {
        for (model, params) in [
            ("noop", "{"),
            ("noop", r#"{"x":1}"#),
            ("sleep", r#"{"duration_ms":"soon"}"#),
            ("mandelbrot", r#"{"width":0}"#),
            ("mandelbrot", r#"{"width":5000}"#),
            ("video-render", r#"{"frames":65}"#),
        ] {
            match run_named(model, b"x", params).await {
                Err(ModelError::InvalidParameters { reason, .. }) => assert!(!reason.is_empty()),
                other => panic!("{model} {params}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn mandelbrot_is_a_deterministic_pgm() {
        let a = run_named("mandelbrot", b"seed", r#"{"width":16,"height":8}"#)
            .await
            .unwrap();
        let b = run_named("mandelbrot", b"seed", r#"{"width":16,"height":8}"#)
            .await
            .unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with(b"P5\n16 8\n255\n"));
        assert_eq!(a.len(), b"P5\n16 8\n255\n".len() + 16 * 8);
        let c = run_named("mandelbrot", b"other", r#"{"width":16,"height":8}"#)
            .await
            .unwrap();
        assert_ne!(a, c, "the input picks the view");
        let v = run_named("video-render", b"seed", r#"{"frames":2}"#)
            .await
            .unwrap();
        assert_eq!(v.len(), 2 * (b"P5\n32 32\n255\n".len() + 32 * 32));
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_reports_progress_and_stops_on_cancel() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let progress: ProgressFn = Arc::new(move |p, _| log.lock().unwrap().push(p));
        let cancel = CancellationToken::new();
        let model = find("sleep").unwrap();
        let run = tokio::spawn(run(
            model,
            Arc::from(&b"in"[..]),
            br#"{"duration_ms":2000}"#,
            cancel.clone(),
            progress,
        ));
        tokio::time::sleep(Duration::from_millis(550)).await;
        cancel.cancel();
        assert_eq!(run.await.unwrap(), Err(ModelError::Cancelled));
        let seen = seen.lock().unwrap().clone();
        // 0 at start, then one step every 100 ms: 0.05 … 0.25 before the cancel.
        assert_eq!(seen.len(), 6, "{seen:?}");
        assert!((seen[5] - 0.25).abs() < 1e-6);
    }

    #[tokio::test]
    async fn cpu_model_stops_when_cancelled() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let model = find("mandelbrot").unwrap();
        let r = run(model, Arc::from(&b"x"[..]), b"", cancel, quiet()).await;
        assert_eq!(r, Err(ModelError::Cancelled));
    }
}
