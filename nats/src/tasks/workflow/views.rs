use super::*;

pub fn workflow_not_found(id: u64) -> ServiceError {
    ServiceError::new(ErrorCode::NotFound, format!("no workflow {id}"))
}

pub(super) fn unavailable(error: &StoreError) -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, format!("task store failed ({error}); retry"))
}

/// Workflow `id` as `get` shows it.
pub fn workflow_reply(conn: &Connection, id: u64) -> Result<Bytes, ServiceError> {
    match view(conn, id, true) {
        Ok(Some(view)) => encode(&view),
        Ok(None) => Err(workflow_not_found(id)),
        Err(error) => Err(unavailable(&error)),
    }
}

/// A workflow with its steps (their tasks' results and errors) and history (`full`), or the
/// summary `list` shows.
pub fn view(conn: &Connection, id: u64, full: bool) -> Result<Option<WorkflowView>, StoreError> {
    let Some(row) = store::workflow(conn, id)? else { return Ok(None) };
    let records = store::workflow_steps(conn, id)?;
    let completed = records.iter().filter(|r| r.step.state == StepState::Completed).count();
    let mut view = summary(&row, records.len(), completed);
    if !full {
        return Ok(Some(view));
    }
    let requests: Vec<StepRequest> = serde_json::from_str(&row.steps).unwrap_or_default();
    let mut steps = Vec::with_capacity(requests.len());
    for (request, record) in requests.into_iter().zip(records) {
        let task = match record.step.task {
            Some(task) => store::get(conn, task, true)?,
            None => None,
        };
        let result = task
            .as_ref()
            .filter(|_| record.step.state != StepState::Running)
            .and_then(|t| t.result.as_deref())
            .filter(|text| text.len() <= RESULT_SHOWN_BYTES_MAX)
            .and_then(|text| RawValue::from_string(text.to_owned()).ok());
        let error = record.error.or_else(|| task.and_then(|t| t.lifecycle.error));
        steps.push(StepView {
            name: request.name,
            op: request.op,
            args: request.args,
            after: request.after,
            feed: request.feed,
            on_failure: request.on_failure.unwrap_or_else(|| "stop".to_owned()),
            compensate: request.compensate,
            state: record.step.state.as_str().to_owned(),
            task: record.step.task.map(|t| t.to_string()),
            result,
            error,
            compensation_task: record.step.compensation.map(|t| t.to_string()),
        });
    }
    view.steps = Some(steps);
    view.history = Some(
        store::workflow_history(conn, id)?
            .iter()
            .filter_map(|text| serde_json::from_str(text).ok())
            .collect(),
    );
    Ok(Some(view))
}

pub(super) fn summary(
    row: &WorkflowRow,
    step_count: usize,
    completed_steps: usize,
) -> WorkflowView {
    WorkflowView {
        id: row.id.to_string(),
        owner: row.owner.clone(),
        name: row.name.clone(),
        client_id: row.client_id.clone(),
        state: row.state.as_str().to_owned(),
        submitted_ms: row.submitted_ms,
        finished_ms: row.finished_ms,
        step_count,
        completed_steps,
        steps: None,
        history: None,
    }
}

/// `agora.tasks.workflows.list`.
pub fn list(
    conn: &Connection,
    owner: Option<&str>,
    state: Option<WorkflowState>,
    before: Option<u64>,
    limit: usize,
) -> Result<Bytes, ServiceError> {
    let rows = store::list_workflows(conn, owner, state, before, limit)
        .map_err(|error| unavailable(&error))?;
    let next_before =
        (rows.len() == limit).then(|| rows.last().map(|(row, _, _)| row.id.to_string())).flatten();
    let workflows =
        rows.iter().map(|(row, count, completed)| summary(row, *count, *completed)).collect();
    encode(&WorkflowListReply { workflows, next_before })
}

/// Who owns workflow `id` (`None`: there is none).
pub fn owner_of(conn: &Connection, id: u64) -> Result<Option<String>, StoreError> {
    Ok(store::workflow(conn, id)?.map(|row| row.owner))
}

/// A person reads and cancels their own workflows; a manager reads anyone's; a service does
/// both.
pub fn may(caller: &Caller, change: bool, owner: &str) -> Result<(), ServiceError> {
    let allowed = if change {
        caller.may_change("workflow", owner)
    } else {
        caller.may_read("workflow", owner)
    };
    allowed.map_err(Into::into)
}
