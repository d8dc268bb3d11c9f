//! The task queue's routes: submit, list, get, cancel; schedules; workflows; the live workers.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::json;

use super::http::{ApiResult, forward, parse_body, path, query};
use super::routes::{Route, schema};
use super::session::Signed;
use super::system::SERVICES_GATHER;
use agora_nats::subjects;
use agora_nats::tasks::wire::{
    ListRequest, ScheduleListRequest, ScheduleNameRequest, SchedulePutRequest, SubmitRequest,
    TaskIdRequest, WorkflowIdRequest, WorkflowListRequest, WorkflowSubmitRequest,
};

/// The task queue's routes.
pub const ROUTES: &[Route] = &[
    route!(
        "POST",
        "/api/tasks",
        "tasks",
        "Submit a task",
        None,
        [],
        Some(schema::<SubmitRequest>),
        post(submit_task)
    ),
    route!(
        "GET",
        "/api/tasks",
        "tasks",
        "Tasks, newest first",
        Some(schema::<ListRequest>),
        ["state", "op", "limit", "before", "dead_letter"],
        None,
        get(list_tasks)
    ),
    route!(
        "GET",
        "/api/tasks/{id}",
        "tasks",
        "One task with its history",
        Some(schema::<TaskIdRequest>),
        [],
        None,
        get(task)
    ),
    route!(
        "POST",
        "/api/tasks/{id}/cancel",
        "tasks",
        "Cancel a task",
        Some(schema::<TaskIdRequest>),
        [],
        None,
        post(cancel_task)
    ),
    route!(
        "POST",
        "/api/tasks/schedules",
        "tasks",
        "Create or replace one of your recurring schedules",
        None,
        [],
        Some(schema::<SchedulePutRequest>),
        post(put_schedule)
    ),
    route!(
        "GET",
        "/api/tasks/schedules",
        "tasks",
        "Your recurring schedules (a manager's: everyone's, or owner's)",
        Some(schema::<ScheduleListRequest>),
        ["owner"],
        None,
        get(list_schedules)
    ),
    route!(
        "POST",
        "/api/tasks/schedules/{name}/pause",
        "tasks",
        "Pause a recurring schedule",
        Some(schema::<ScheduleNameRequest>),
        ["owner"],
        None,
        post(pause_schedule)
    ),
    route!(
        "POST",
        "/api/tasks/schedules/{name}/resume",
        "tasks",
        "Resume a paused schedule",
        Some(schema::<ScheduleNameRequest>),
        ["owner"],
        None,
        post(resume_schedule)
    ),
    route!(
        "DELETE",
        "/api/tasks/schedules/{name}",
        "tasks",
        "Delete a recurring schedule",
        Some(schema::<ScheduleNameRequest>),
        ["owner"],
        None,
        axum::routing::delete(delete_schedule)
    ),
    route!(
        "POST",
        "/api/tasks/workflows",
        "tasks",
        "Run a workflow: steps that depend on each other",
        None,
        [],
        Some(schema::<WorkflowSubmitRequest>),
        post(submit_workflow)
    ),
    route!(
        "GET",
        "/api/tasks/workflows",
        "tasks",
        "Your workflows, newest first (a manager's: everyone's, or owner's)",
        Some(schema::<WorkflowListRequest>),
        ["state", "owner", "before", "limit"],
        None,
        get(list_workflows)
    ),
    route!(
        "GET",
        "/api/tasks/workflows/{id}",
        "tasks",
        "One workflow with its steps and history",
        Some(schema::<WorkflowIdRequest>),
        [],
        None,
        get(workflow)
    ),
    route!(
        "POST",
        "/api/tasks/workflows/{id}/cancel",
        "tasks",
        "Cancel a workflow",
        Some(schema::<WorkflowIdRequest>),
        [],
        None,
        post(cancel_workflow)
    ),
    route!(
        "GET",
        "/api/workers",
        "tasks",
        "Every live worker's status (managers)",
        None,
        [],
        None,
        get(workers)
    ),
];

pub async fn submit_task(signed: Signed, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let request: SubmitRequest = parse_body(body)?;
    Ok(Json(signed.agora.submit(&request).await?).into_response())
}

pub async fn list_tasks(
    signed: Signed,
    request: Result<Query<ListRequest>, QueryRejection>,
) -> ApiResult {
    forward(&signed.agora, subjects::tasks::LIST_SUBJECT, &query(request)?).await
}

pub async fn task(signed: Signed, id: Result<Path<String>, PathRejection>) -> ApiResult {
    let id = path(id)?;
    forward(&signed.agora, subjects::tasks::GET_SUBJECT, &TaskIdRequest { id }).await
}

pub async fn cancel_task(signed: Signed, id: Result<Path<String>, PathRejection>) -> ApiResult {
    let id = path(id)?;
    forward(&signed.agora, subjects::tasks::CANCEL_SUBJECT, &TaskIdRequest { id }).await
}

pub async fn workers(signed: Signed) -> ApiResult {
    signed.manager("the workers")?;
    let workers = signed.agora.workers(SERVICES_GATHER).await?;
    Ok(Json(json!({ "workers": workers })).into_response())
}

pub async fn put_schedule(signed: Signed, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let request: SchedulePutRequest = parse_body(body)?;
    Ok(Json(signed.agora.put_schedule(&request).await?).into_response())
}

pub async fn list_schedules(
    signed: Signed,
    request: Result<Query<ScheduleListRequest>, QueryRejection>,
) -> ApiResult {
    let subject = subjects::tasks::schedules(subjects::tasks::SCHEDULE_LIST);
    forward(&signed.agora, &subject, &query(request)?).await
}

/// The owner a manager may name (`?owner=`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerQuery {
    #[serde(default)]
    owner: Option<String>,
}

async fn schedule_action(
    verb: &str,
    signed: Signed,
    name: Result<Path<String>, PathRejection>,
    owner: Result<Query<OwnerQuery>, QueryRejection>,
) -> ApiResult {
    let request = ScheduleNameRequest { name: path(name)?, owner: query(owner)?.owner };
    forward(&signed.agora, &subjects::tasks::schedules(verb), &request).await
}

pub async fn pause_schedule(
    signed: Signed,
    name: Result<Path<String>, PathRejection>,
    owner: Result<Query<OwnerQuery>, QueryRejection>,
) -> ApiResult {
    schedule_action(subjects::tasks::SCHEDULE_PAUSE, signed, name, owner).await
}

pub async fn resume_schedule(
    signed: Signed,
    name: Result<Path<String>, PathRejection>,
    owner: Result<Query<OwnerQuery>, QueryRejection>,
) -> ApiResult {
    schedule_action(subjects::tasks::SCHEDULE_RESUME, signed, name, owner).await
}

pub async fn delete_schedule(
    signed: Signed,
    name: Result<Path<String>, PathRejection>,
    owner: Result<Query<OwnerQuery>, QueryRejection>,
) -> ApiResult {
    schedule_action(subjects::tasks::SCHEDULE_DELETE, signed, name, owner).await
}

pub async fn submit_workflow(signed: Signed, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let request: WorkflowSubmitRequest = parse_body(body)?;
    Ok(Json(signed.agora.submit_workflow(&request).await?).into_response())
}

pub async fn list_workflows(
    signed: Signed,
    request: Result<Query<WorkflowListRequest>, QueryRejection>,
) -> ApiResult {
    let subject = subjects::tasks::workflows(subjects::tasks::WORKFLOW_LIST);
    forward(&signed.agora, &subject, &query(request)?).await
}

pub async fn workflow(signed: Signed, id: Result<Path<String>, PathRejection>) -> ApiResult {
    let request = WorkflowIdRequest { id: path(id)? };
    let subject = subjects::tasks::workflows(subjects::tasks::WORKFLOW_GET);
    forward(&signed.agora, &subject, &request).await
}

pub async fn cancel_workflow(signed: Signed, id: Result<Path<String>, PathRejection>) -> ApiResult {
    let request = WorkflowIdRequest { id: path(id)? };
    let subject = subjects::tasks::workflows(subjects::tasks::WORKFLOW_CANCEL);
    forward(&signed.agora, &subject, &request).await
}
