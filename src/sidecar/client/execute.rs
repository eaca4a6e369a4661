//! `ExecuteTask` as a `tower::Service`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;

use super::error::{
    ATTACH_HEADER, VERDICT_CANCELLED, VERDICT_HEADER, blame_of_words, is_cancel_words,
};
use super::{Blame, ExecuteRequest, ExecutionResult, SidecarError, Wire};
use crate::sidecar::proto;
use crate::sidecar::proto::sidecar_client::SidecarClient as Grpc;
use crate::task::{Cid, RunId, TaskId};

/// `ExecuteTask` as a `tower::Service<ExecuteRequest>`.
///
/// Readiness is the channel's: `poll_ready` reserves a slot in the
/// connection's request buffer, and `call` spends it (the ready channel moves
/// into the call; a fresh clone stays behind).
#[derive(Clone, Debug)]
pub struct Execute {
    pub(super) channel: Wire,
    pub(super) grace: Duration,
    /// Set: a run already going for the task is waited for and its answer
    /// taken, instead of `ALREADY_EXISTS`.
    pub(super) attach: Option<super::SidecarClient>,
}

/// The future of an `ExecuteTask` call.
pub type ExecuteFuture =
    Pin<Box<dyn Future<Output = Result<ExecutionResult, SidecarError>> + Send + 'static>>;

impl tower::Service<ExecuteRequest> for Execute {
    type Response = ExecutionResult;
    type Error = SidecarError;
    type Future = ExecuteFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::<tonic::codegen::http::Request<tonic::body::Body>>::poll_ready(
            &mut self.channel,
            cx,
        )
        .map_err(|e| SidecarError::from_transport(None, &e))
    }

    fn call(&mut self, req: ExecuteRequest) -> Self::Future {
        let fresh = self.channel.clone();
        let ready = std::mem::replace(&mut self.channel, fresh);
        let grace = self.grace;
        let Some(client) = self.attach.clone() else {
            return Box::pin(async move { Ok(execute(ready, req, grace).await?) });
        };
        Box::pin(async move {
            let again = req.clone();
            match execute(ready, req, grace).await {
                Err(Refusal::Attach(..)) => {
                    let run = again.run();
                    let limit = again.timeout.map(|t| t.saturating_add(grace));
                    tracing::info!(task_id = %run.task, %run, "this run is going already: attaching to it");
                    client.wait_ended(run, limit).await?;
                    // The sidecar answers a completed run with its answer; one
                    // that failed or was cancelled runs again.
                    Ok(execute(client.channel.clone(), again, grace).await?)
                }
                result => Ok(result?),
            }
        })
    }
}

/// How an `ExecuteTask` call failed.
#[derive(Debug)]
enum Refusal {
    /// The sidecar runs this very request already and will answer it once
    /// it ends (it said so with [`ATTACH_HEADER`]).
    Attach(RunId, String),
    /// Any other failure.
    Failed(SidecarError),
}

impl From<SidecarError> for Refusal {
    fn from(e: SidecarError) -> Self {
        Refusal::Failed(e)
    }
}

impl From<Refusal> for SidecarError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Failed(e) => e,
            // Without an attaching client the id is as good as spent.
            Refusal::Attach(run, message) => SidecarError::RunIdTaken { run, message },
        }
    }
}

async fn execute(
    channel: Wire,
    req: ExecuteRequest,
    grace: Duration,
) -> Result<ExecutionResult, Refusal> {
    let task_id = req.task_id;
    let run = req.run();
    let timeout_ms = req
        .timeout
        .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    let deadline = req.timeout.map(|t| t.saturating_add(grace));
    let mut request = tonic::Request::new(proto::ExecuteTaskRequest {
        task_id: run.to_string(),
        model_id: req.model.as_str().to_owned(),
        input_cid: req.input_cid.as_str().to_owned(),
        parameters: req.parameters.into_bytes(),
        timeout_ms,
        callback_endpoint: String::new(),
        plugin_name: String::new(),
        lane: req.lane.index(),
    });
    if let Some(d) = deadline {
        request.set_timeout(d);
    }
    let mut grpc = Grpc::new(channel);
    let started = Instant::now();
    let call = grpc.execute_task(request);
    let result = match deadline {
        Some(d) => match tokio::time::timeout(d, call).await {
            Ok(r) => r,
            // Dropping the call resets the stream; the sidecar stops the run.
            Err(_) => return Err(SidecarError::TimedOut { task_id, after: d }.into()),
        },
        None => call.await,
    };
    let response = match result {
        Ok(r) => r,
        Err(status) => {
            // A CANCELLED status once the deadline we set has passed is our
            // timeout, enforced by the server from the grpc-timeout header.
            if let Some(after) = deadline
                && status.code() == Code::Cancelled
                && started.elapsed() >= after
            {
                return Err(SidecarError::TimedOut { task_id, after }.into());
            }
            return Err(refusal_of(run, status));
        }
    };
    let verdict = response
        .metadata()
        .get(VERDICT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(result_of(
        task_id,
        response.into_inner(),
        verdict.as_deref(),
    )?)
}

/// What a refused `ExecuteTask` call means: a run id the sidecar knows
/// (attached to, when it says the run is this request's; otherwise spent),
/// a cancel, or another failure of the call.
fn refusal_of(run: RunId, status: tonic::Status) -> Refusal {
    let task_id = run.task;
    match status.code() {
        Code::AlreadyExists => {
            let same = status
                .metadata()
                .get(ATTACH_HEADER)
                .is_some_and(|v| v.as_bytes() == b"same-request");
            if same {
                Refusal::Attach(run, status.message().to_owned())
            } else {
                SidecarError::RunIdTaken {
                    run,
                    message: status.message().to_owned(),
                }
                .into()
            }
        }
        Code::Cancelled if is_cancel_words(status.message()) => SidecarError::Cancelled {
            task_id,
            message: status.message().to_owned(),
        }
        .into(),
        // About the run's plugin, not about a task the sidecar lost.
        Code::NotFound => SidecarError::Rpc {
            task_id: Some(task_id),
            code: Code::NotFound,
            message: status.message().to_owned(),
        }
        .into(),
        _ => SidecarError::from_status(Some(task_id), status).into(),
    }
}

/// What an `ExecuteTask` answer says, checked: a failure in the body (whose
/// fault by the sidecar's `verdict`, else by its words; a cancel), an output
/// CID that is not a CID, or the result.
pub(crate) fn result_of(
    task_id: TaskId,
    body: proto::ExecuteTaskResponse,
    verdict: Option<&str>,
) -> Result<ExecutionResult, SidecarError> {
    if !body.success {
        let message = body.error_message;
        let cancelled = match verdict {
            Some(v) => v == VERDICT_CANCELLED,
            None => is_cancel_words(&message),
        };
        if cancelled {
            return Err(SidecarError::Cancelled { task_id, message });
        }
        let blame = verdict.and_then(Blame::from_verdict).unwrap_or_else(|| {
            match blame_of_words(&message) {
                // Words never make a failure the model's.
                Blame::Model => Blame::Unknown,
                other => other,
            }
        });
        return Err(SidecarError::Model {
            task_id,
            message,
            blame,
        });
    }
    let output_cid = Cid::parse(&body.output_cid)
        .map_err(|reason| SidecarError::InvalidOutput { task_id, reason })?;
    Ok(ExecutionResult {
        task_id,
        output_cid,
        execution_time: Duration::from_millis(body.execution_time_ms),
        metadata: body.result_metadata,
    })
}
