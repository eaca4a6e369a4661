//! `ExecuteTask` as a `tower::Service`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

use super::{ExecuteRequest, ExecutionResult, SidecarError};
use crate::sidecar::proto;
use crate::sidecar::proto::sidecar_client::SidecarClient as Grpc;
use crate::task::{Cid, TaskId};

/// `ExecuteTask` as a `tower::Service<ExecuteRequest>`.
///
/// Readiness is the channel's: `poll_ready` reserves a slot in the
/// connection's request buffer, and `call` spends it (the ready channel moves
/// into the call; a fresh clone stays behind).
#[derive(Clone, Debug)]
pub struct Execute {
    pub(super) channel: Channel,
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
            return Box::pin(execute(ready, req, grace));
        };
        Box::pin(async move {
            let again = req.clone();
            match execute(ready, req, grace).await {
                Err(SidecarError::Rpc {
                    code: Code::AlreadyExists,
                    ..
                }) => {
                    let task_id = again.task_id;
                    let limit = again.timeout.map(|t| t.saturating_add(grace));
                    tracing::info!(%task_id, "a run of this task is going already: attaching to it");
                    client.wait_ended(task_id, limit).await?;
                    // The sidecar answers a completed task with its answer;
                    // one that failed or was cancelled runs again.
                    execute(client.channel.clone(), again, grace).await
                }
                result => result,
            }
        })
    }
}

async fn execute(
    channel: Channel,
    req: ExecuteRequest,
    grace: Duration,
) -> Result<ExecutionResult, SidecarError> {
    let task_id = req.task_id;
    let timeout_ms = req
        .timeout
        .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    let deadline = req.timeout.map(|t| t.saturating_add(grace));
    let mut request = tonic::Request::new(proto::ExecuteTaskRequest {
        task_id: task_id.to_string(),
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
            Err(_) => return Err(SidecarError::TimedOut { task_id, after: d }),
        },
        None => call.await,
    };
    let body = match result {
        Ok(r) => r.into_inner(),
        Err(status) => {
            // A CANCELLED status once the deadline we set has passed is our
            // timeout, enforced by the server from the grpc-timeout header.
            if let Some(after) = deadline
                && status.code() == Code::Cancelled
                && started.elapsed() >= after
            {
                return Err(SidecarError::TimedOut { task_id, after });
            }
            return Err(SidecarError::from_status(Some(task_id), status));
        }
    };
    result_of(task_id, body)
}

/// What an `ExecuteTask` answer says, checked: a failure in the body, an
/// output CID that is not a CID, or the result.
pub(crate) fn result_of(
    task_id: TaskId,
    body: proto::ExecuteTaskResponse,
) -> Result<ExecutionResult, SidecarError> {
    if !body.success {
        return Err(SidecarError::Model {
            task_id,
            message: body.error_message,
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
