use super::*;

pub(super) fn parse_id(text: &str) -> Result<u64, ServiceError> {
    positive_id("task", text)
}

/// A task's or workflow's id: a positive integer.
pub(super) fn positive_id(what: &str, text: &str) -> Result<u64, ServiceError> {
    text.parse::<u64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ServiceError::invalid(format!(
            "{text:?} is not a {what} id ({what} ids are positive integers)"
        ))
    })
}

pub(super) fn check_name(what: &str, text: &str) -> Result<(), ServiceError> {
    if text.is_empty() || text.len() > CLIENT_ID_BYTES_MAX || text.chars().any(|c| c.is_control()) {
        return Err(ServiceError::invalid(format!(
            "{what} must be 1..={CLIENT_ID_BYTES_MAX} bytes without control characters"
        )));
    }
    Ok(())
}

/// Decodes and validates a request of `caller` (on the runtime, before it reaches the owner
/// thread): workers' reports come only from Agora's workers; a person lists their own tasks.
pub(super) fn parse_command(
    endpoint: &str,
    caller: &Caller,
    payload: &[u8],
) -> Result<Command, ServiceError> {
    if [subject::CLAIM, subject::PROGRESS, subject::FINISH].contains(&endpoint) {
        caller.require_service("a worker's report")?;
    }
    caller.signed_in("a task")?;
    Ok(match endpoint {
        subject::SUBMIT => {
            let submit: SubmitRequest = decode_limited(payload, SUBMIT_BYTES_MAX)?;
            let op = parse_op(&submit.op, &submit.args)?;
            if let Some(id) = &submit.id {
                check_name("id", id)?;
            }
            let wait_ms = submit.wait_ms.unwrap_or(0);
            if wait_ms > WAIT_MS_MAX {
                return Err(ServiceError::invalid(format!("wait_ms is at most {WAIT_MS_MAX}")));
            }
            let now = crate::clock::now_ms();
            let run_at_ms = match (submit.run_at_ms, submit.delay_ms) {
                (None, None) => None,
                (Some(at), None) => Some(at),
                (None, Some(delay)) => Some(now.saturating_add(delay)),
                (Some(_), Some(_)) => {
                    return Err(ServiceError::invalid("give run_at_ms or delay_ms, not both"));
                }
            };
            if let Some(at) = run_at_ms {
                Spec::at(now, at).map_err(|e| ServiceError::invalid(e.to_string()))?;
            }
            // The server's scheduler counts whole seconds: a task never runs before its time.
            let run_at_ms =
                run_at_ms.filter(|at| *at > now + DELAY_MS_MIN).map(|at| at.div_ceil(1000) * 1000);
            // serde_json maps sort their keys: the same args give the same text.
            let args = serde_json::from_str::<serde_json::Value>(submit.args.get())
                .map_err(|e| ServiceError::invalid(format!("bad args: {e}")))?
                .to_string();
            Command::Submit {
                op: op.name(),
                args,
                priority: Priority::parse(submit.priority.as_deref())?,
                client_id: submit.id,
                wait_ms,
                run_at_ms,
                ttl_ms: submit
                    .ttl_ms
                    .map(|ttl| {
                        if (1_000..=agora_core::tasks::schedule::HORIZON_MS).contains(&ttl) {
                            Ok(ttl)
                        } else {
                            Err(ServiceError::invalid(
                                "ttl_ms is 1000..=31622400000 (1 s to 366 days)",
                            ))
                        }
                    })
                    .transpose()?,
            }
        }
        subject::GET => Command::Get { id: parse_id(&decode::<TaskIdRequest>(payload)?.id)? },
        subject::CANCEL => Command::Cancel { id: parse_id(&decode::<TaskIdRequest>(payload)?.id)? },
        subject::WAIT => {
            let wait: WaitRequest = decode(payload)?;
            if wait.timeout_ms > WAIT_MS_MAX {
                return Err(ServiceError::invalid(format!("timeout_ms is at most {WAIT_MS_MAX}")));
            }
            Command::Wait { id: parse_id(&wait.id)?, timeout_ms: wait.timeout_ms }
        }
        subject::LIST => {
            let list: ListRequest = decode_or_default(payload, LIST_BYTES_MAX)?;
            let state = match list.state.as_deref() {
                None => None,
                Some(text) => Some(TaskState::parse(text).ok_or_else(|| {
                    ServiceError::invalid(format!(
                        "state must be one of queued, running, completed, failed, cancelled; not {text:?}"
                    ))
                })?),
            };
            if let Some(op) = &list.op
                && !agora_core::tasks::ops::OP_NAMES.contains(&op.as_str())
            {
                return Err(ServiceError::invalid(format!("unknown op {op:?}")));
            }
            let limit = list.limit.unwrap_or(LIST_LIMIT_DEFAULT);
            if !(1..=LIST_LIMIT_MAX).contains(&limit) {
                return Err(ServiceError::invalid(format!("limit is 1..={LIST_LIMIT_MAX}")));
            }
            let before = list.before.as_deref().map(parse_id).transpose()?;
            // A person sees their own tasks; a manager and a service see everyone's.
            let owner = match caller {
                Caller::User { name, role: Role::User } => Some(name.to_string()),
                _ => None,
            };
            Command::List(ListFilter {
                owner,
                state,
                op: list.op,
                before,
                dead_letter: list.dead_letter,
                limit,
            })
        }
        subject::CLAIM => {
            let claim: ClaimRequest = decode(payload)?;
            check_name("worker", &claim.worker)?;
            Command::Claim { id: parse_id(&claim.id)?, worker: claim.worker }
        }
        subject::PROGRESS => {
            let progress: ProgressRequest = decode(payload)?;
            check_name("worker", &progress.worker)?;
            if progress.percent > 100 {
                return Err(ServiceError::invalid("percent is 0..=100"));
            }
            Command::Progress {
                id: parse_id(&progress.id)?,
                worker: progress.worker,
                percent: progress.percent,
            }
        }
        subject::FINISH => {
            let finish: FinishRequest = decode_limited(payload, FINISH_BYTES_MAX)?;
            check_name("worker", &finish.worker)?;
            let outcome = match (finish.result, finish.error) {
                (Some(result), None) => Ok(result.get().to_owned()),
                (None, Some(error)) => Err((error, finish.retry_in_ms)),
                _ => return Err(ServiceError::invalid("give exactly one of result and error")),
            };
            Command::Finish {
                id: parse_id(&finish.id)?,
                worker: finish.worker,
                claim: finish.claim,
                outcome,
            }
        }
        other => {
            return Err(ServiceError::new(ErrorCode::Internal, format!("no endpoint {other}")));
        }
    })
}

/// Whose schedule a request acts on: the caller's own, or the named `owner`'s for a manager
/// or a service.
pub(super) fn schedule_owner(caller: &Caller, named: Option<&str>) -> Result<String, ServiceError> {
    match named {
        None => Ok(caller.owner().to_owned()),
        Some(owner) => {
            caller
                .may_change("schedule", owner)
                .or_else(|error| if caller.is_manager() { Ok(()) } else { Err(error) })?;
            Ok(owner.to_owned())
        }
    }
}

/// Decodes and validates a recurring-schedule request of `caller`.
pub(super) fn parse_schedule(
    verb: &str,
    caller: &Caller,
    payload: &[u8],
) -> Result<Command, ServiceError> {
    caller.signed_in("a schedule")?;
    let invalid = |error: rules::ScheduleError| ServiceError::invalid(error.to_string());
    Ok(match verb {
        subject::SCHEDULE_PUT => {
            let put: SchedulePutRequest = decode_limited(payload, SUBMIT_BYTES_MAX)?;
            rules::check_name(&put.name).map_err(invalid)?;
            let spec = Spec::recurring(&put.schedule).map_err(invalid)?;
            if let Some(zone) = &put.time_zone {
                rules::check_time_zone(zone).map_err(invalid)?;
                if !spec.is_cron() {
                    return Err(ServiceError::invalid(
                        "a time zone goes with a cron schedule, not with @every",
                    ));
                }
            }
            let op = parse_op(&put.op, &put.args)?;
            let args = serde_json::from_str::<serde_json::Value>(put.args.get())
                .map_err(|e| ServiceError::invalid(format!("bad args: {e}")))?
                .to_string();
            let now = crate::clock::now_ms();
            Command::PutSchedule(ScheduleRow {
                owner: caller.owner().to_owned(),
                name: put.name,
                spec: spec.header(),
                time_zone: put.time_zone,
                op: op.name().to_owned(),
                args,
                priority: Priority::parse(put.priority.as_deref())?.as_str().to_owned(),
                paused: put.paused,
                created_ms: now,
                updated_ms: now,
                runs: 0,
                last_run_ms: None,
                last_task: None,
                next_run_ms: None,
            })
        }
        subject::SCHEDULE_LIST => {
            let list: ScheduleListRequest = decode_or_default(payload, LIST_BYTES_MAX)?;
            // A person sees their own; a manager and a service everyone's (or one owner's).
            let owner = match (caller, list.owner) {
                (Caller::User { role: Role::User, .. }, named) => {
                    Some(schedule_owner(caller, named.as_deref())?)
                }
                (_, named) => named,
            };
            Command::ListSchedules { owner }
        }
        verb => {
            let request: ScheduleNameRequest = decode(payload)?;
            rules::check_name(&request.name).map_err(invalid)?;
            let action = match verb {
                subject::SCHEDULE_PAUSE => ScheduleAction::Pause,
                subject::SCHEDULE_RESUME => ScheduleAction::Resume,
                subject::SCHEDULE_DELETE => ScheduleAction::Delete,
                other => {
                    return Err(ServiceError::new(
                        ErrorCode::Internal,
                        format!("no endpoint {other}"),
                    ));
                }
            };
            let owner = schedule_owner(caller, request.owner.as_deref())?;
            Command::ScheduleAction { owner, name: request.name, action }
        }
    })
}

/// Decodes and validates a workflow request of `caller`.
pub(super) fn parse_workflow(
    verb: &str,
    caller: &Caller,
    payload: &[u8],
) -> Result<Command, ServiceError> {
    caller.signed_in("a workflow")?;
    Ok(match verb {
        subject::WORKFLOW_SUBMIT => {
            let request: WorkflowSubmitRequest = decode_limited(payload, SUBMIT_BYTES_MAX)?;
            if let Some(id) = &request.id {
                check_name("id", id)?;
            }
            Command::WorkflowSubmit(Box::new(workflow::check(request)?))
        }
        subject::WORKFLOW_GET => Command::WorkflowGet {
            id: parse_workflow_id(&decode::<WorkflowIdRequest>(payload)?.id)?,
        },
        subject::WORKFLOW_CANCEL => Command::WorkflowCancel {
            id: parse_workflow_id(&decode::<WorkflowIdRequest>(payload)?.id)?,
        },
        subject::WORKFLOW_LIST => {
            let list: WorkflowListRequest = decode_or_default(payload, LIST_BYTES_MAX)?;
            let state = match list.state.as_deref() {
                None => None,
                Some(text) => Some(WorkflowState::parse(text).ok_or_else(|| {
                    ServiceError::invalid(format!(
                        "state must be one of running, completed, failed, cancelled, \
                         compensating, compensated; not {text:?}"
                    ))
                })?),
            };
            let limit = list.limit.unwrap_or(LIST_LIMIT_DEFAULT);
            if !(1..=LIST_LIMIT_MAX).contains(&limit) {
                return Err(ServiceError::invalid(format!("limit is 1..={LIST_LIMIT_MAX}")));
            }
            let before = list.before.as_deref().map(parse_workflow_id).transpose()?;
            // A person sees their own; a manager and a service everyone's (or one owner's).
            let owner = match (caller, list.owner) {
                (Caller::User { role: Role::User, .. }, named) => {
                    Some(schedule_owner(caller, named.as_deref())?)
                }
                (_, named) => named,
            };
            Command::WorkflowList { owner, state, before, limit }
        }
        other => {
            return Err(ServiceError::new(ErrorCode::Internal, format!("no endpoint {other}")));
        }
    })
}

pub(super) fn parse_workflow_id(text: &str) -> Result<u64, ServiceError> {
    positive_id("workflow", text)
}
