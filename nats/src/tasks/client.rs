//! The task service's calls on [`AgoraClient`]: submit, get, list, cancel, wait, workers.

use std::time::Duration;

use bytes::Bytes;

use super::wire::{
    ListReply, ListRequest, ScheduleListReply, ScheduleListRequest, ScheduleNameRequest,
    SchedulePutRequest, ScheduleView, SubmitRequest, TaskIdRequest, TaskView, WaitRequest,
    WorkerStatus, WorkflowIdRequest, WorkflowListReply, WorkflowListRequest, WorkflowSubmitRequest,
    WorkflowView,
};
use crate::client::{AgoraClient, ClientError};
use crate::subjects::{self, tasks as subject};

impl AgoraClient {
    /// Submits a task. With `wait_ms`, the reply comes when the task finished (or the wait is
    /// over) and is the whole task.
    pub async fn submit(&self, request: &SubmitRequest) -> Result<TaskView, ClientError> {
        let timeout = self.timeout() + Duration::from_millis(request.wait_ms.unwrap_or(0));
        self.request_within(subject::SUBMIT_SUBJECT, request, timeout).await
    }

    /// A task with its history.
    pub async fn task(&self, id: &str) -> Result<TaskView, ClientError> {
        let request = TaskIdRequest { id: id.to_owned() };
        self.request(subject::GET_SUBJECT, &request).await
    }

    pub async fn tasks(&self, request: &ListRequest) -> Result<ListReply, ClientError> {
        self.request(subject::LIST_SUBJECT, request).await
    }

    pub async fn cancel_task(&self, id: &str) -> Result<TaskView, ClientError> {
        let request = TaskIdRequest { id: id.to_owned() };
        self.request(subject::CANCEL_SUBJECT, &request).await
    }

    /// Waits up to `timeout_ms` for a task to finish; returns it as it is then.
    pub async fn wait_task(&self, id: &str, timeout_ms: u64) -> Result<TaskView, ClientError> {
        let request = WaitRequest { id: id.to_owned(), timeout_ms };
        let timeout = self.timeout() + Duration::from_millis(timeout_ms);
        self.request_within(subject::WAIT_SUBJECT, &request, timeout).await
    }

    /// Creates or replaces one of the caller's recurring schedules.
    pub async fn put_schedule(
        &self,
        request: &SchedulePutRequest,
    ) -> Result<ScheduleView, ClientError> {
        self.request(&subject::schedules(subject::SCHEDULE_PUT), request).await
    }

    /// The caller's schedules (a manager's: everyone's, or `owner`'s).
    pub async fn schedules(&self, owner: Option<String>) -> Result<ScheduleListReply, ClientError> {
        let request = ScheduleListRequest { owner };
        self.request(&subject::schedules(subject::SCHEDULE_LIST), &request).await
    }

    /// Pauses, resumes or deletes a schedule (`verb`: one of `subject::SCHEDULE_PAUSE`,
    /// `SCHEDULE_RESUME`, `SCHEDULE_DELETE`).
    pub async fn schedule_action(
        &self,
        verb: &str,
        name: &str,
        owner: Option<String>,
    ) -> Result<ScheduleView, ClientError> {
        let request = ScheduleNameRequest { name: name.to_owned(), owner };
        self.request(&subject::schedules(verb), &request).await
    }

    /// Submits a workflow; the reply is the workflow with its first steps started.
    pub async fn submit_workflow(
        &self,
        request: &WorkflowSubmitRequest,
    ) -> Result<WorkflowView, ClientError> {
        self.request(&subject::workflows(subject::WORKFLOW_SUBMIT), request).await
    }

    /// A workflow with its steps and history.
    pub async fn workflow(&self, id: &str) -> Result<WorkflowView, ClientError> {
        let request = WorkflowIdRequest { id: id.to_owned() };
        self.request(&subject::workflows(subject::WORKFLOW_GET), &request).await
    }

    pub async fn workflows(
        &self,
        request: &WorkflowListRequest,
    ) -> Result<WorkflowListReply, ClientError> {
        self.request(&subject::workflows(subject::WORKFLOW_LIST), request).await
    }

    pub async fn cancel_workflow(&self, id: &str) -> Result<WorkflowView, ClientError> {
        let request = WorkflowIdRequest { id: id.to_owned() };
        self.request(&subject::workflows(subject::WORKFLOW_CANCEL), &request).await
    }

    /// Every live worker's status, gathered from `$SRV.STATS.agora-worker` for `within`.
    pub async fn workers(&self, within: Duration) -> Result<Vec<WorkerStatus>, ClientError> {
        let stats_subject = subjects::micro::stats(subjects::worker::SERVICE);
        let replies = self.gather(&stats_subject, Bytes::new(), within, None).await?;
        let mut workers: Vec<WorkerStatus> = replies
            .iter()
            .filter_map(|message| {
                serde_json::from_slice::<serde_json::Value>(&message.payload).ok()
            })
            .filter_map(|stats| {
                let data = stats["endpoints"].as_array()?.first()?["data"].clone();
                serde_json::from_value(data).ok()
            })
            .collect();
        workers.sort_by(|a, b| a.worker.cmp(&b.worker));
        Ok(workers)
    }
}
