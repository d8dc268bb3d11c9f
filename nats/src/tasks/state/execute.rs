use super::*;

impl Tasks {
    pub(super) fn enqueue_stored(
        &self,
        conn: &Connection,
        id: u64,
        outbox: &mut Outbox,
    ) -> Result<(), StoreError> {
        if let Some(row) = store::get(conn, id, false)? {
            let priority = Priority::parse(Some(&row.priority)).unwrap_or(Priority::Normal);
            let message = queue::message(id, &row.op, row.args.as_deref().unwrap_or("{}"));
            outbox.enqueue.push(queue::Queued { id, priority, message, span: None });
        }
        Ok(())
    }

    pub(super) fn sweep(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        // Waiters whose time is up get the task as it is.
        let expired: Vec<u64> = self
            .waiters
            .iter()
            .filter(|(_, list)| list.iter().any(|w| w.deadline_ms <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let Some(list) = self.waiters.remove(&id) else { continue };
            let (due, keep): (Vec<_>, Vec<_>) =
                list.into_iter().partition(|w| w.deadline_ms <= now);
            self.waiter_count -= due.len();
            if !keep.is_empty() {
                self.waiters.insert(id, keep);
            }
            let reply = full_view(tx, id);
            for waiter in due {
                out.replies.push((waiter.pending, reply.clone()));
            }
        }
        out.changes.extend(self.scheduler.due(now));
        // Tasks whose publish failed go out again.
        for id in self.queue.due(now) {
            if self.active.contains_key(&id) {
                self.enqueue_stored(tx, id, out)?;
            }
        }
        if now.saturating_sub(self.last_prune_ms) >= PRUNE_EVERY_MS {
            self.last_prune_ms = now;
            self.submits.forget(now);
            let before = now.saturating_sub(self.config.retain_ms);
            let pruned = store::prune(tx, now, before, self.config.tasks_max, PRUNE_BATCH)?;
            let flows =
                store::prune_workflows(tx, before, workflow::WORKFLOWS_KEPT_MAX, PRUNE_BATCH)?;
            if pruned + flows > 0 {
                tracing::debug!(pruned, workflows = flows, "pruned finished tasks and workflows");
            }
        }
        Ok(())
    }

    pub(super) fn execute(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        pending: Pending,
        command: Command,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        let reply: Result<Bytes, ServiceError> = match command {
            Command::Submit { op, args, priority, client_id, wait_ms, run_at_ms, ttl_ms } => {
                let owner = pending.caller.owner().to_owned();
                if let Err(limited) = self.take_submits(&owner, 1, now) {
                    out.replies.push((pending, Err(limited)));
                    return Ok(());
                }
                let span = crate::service::span_of(&pending.request);
                let task = Submission {
                    owner: &owner,
                    op,
                    args: &args,
                    priority,
                    span,
                    run_at_ms,
                    schedule: None,
                    ttl_ms,
                    workflow: None,
                };
                match self.submit(tx, now, &task, client_id.as_deref(), out)? {
                    Ok((id, state)) if wait_ms > 0 && !state.is_terminal() => {
                        self.add_waiter(id, pending, now + wait_ms, out);
                        return Ok(());
                    }
                    Ok((id, _)) if wait_ms > 0 => full_view(tx, id),
                    Ok((id, state)) => encode(&TaskView::brief(id, state)),
                    Err(error) => Err(error),
                }
            }
            Command::PutSchedule(row) => self.put_schedule(tx, row, out)?,
            Command::WorkflowSubmit(checked) => {
                let owner = pending.caller.owner().to_owned();
                match self.take_submits(&owner, checked.steps.len() as u64, now) {
                    Ok(()) => self.submit_workflow(tx, now, &owner, *checked, out)?,
                    Err(limited) => Err(limited),
                }
            }
            Command::WorkflowGet { id } => match workflow::owner_of(tx, id)? {
                None => Err(workflow::workflow_not_found(id)),
                Some(owner) => workflow::may(&pending.caller, false, &owner)
                    .and_then(|()| workflow::workflow_reply(tx, id)),
            },
            Command::WorkflowCancel { id } => match workflow::owner_of(tx, id)? {
                None => Err(workflow::workflow_not_found(id)),
                Some(owner) => match workflow::may(&pending.caller, true, &owner) {
                    Ok(()) => self.cancel_workflow(tx, now, id, out)?,
                    Err(error) => Err(error),
                },
            },
            Command::WorkflowList { owner, state, before, limit } => {
                workflow::list(tx, owner.as_deref(), state, before, limit)
            }
            Command::ListSchedules { owner } => {
                let rows =
                    store::schedules(tx, owner.as_deref(), schedules::SCHEDULES_MAX as usize)?;
                encode(&ScheduleListReply {
                    schedules: rows.iter().map(ScheduleRow::view).collect(),
                })
            }
            Command::ScheduleAction { owner, name, action } => {
                self.schedule_action(tx, now, &owner, &name, action, out)?
            }
            Command::Get { id } => match store::get(tx, id, true)? {
                Some(row) if let Err(error) = pending.caller.may_read("task", &row.owner) => {
                    Err(error.into())
                }
                Some(row) => {
                    let mut view = row.view();
                    let history = store::history(tx, id)?;
                    view.history =
                        Some(history.iter().filter_map(|e| serde_json::from_str(e).ok()).collect());
                    encode(&view)
                }
                None => Err(not_found(id)),
            },
            Command::List(filter) => {
                let rows = store::list(tx, &filter)?;
                let next_before = (rows.len() == filter.limit)
                    .then(|| rows.last().map(|row| row.id.to_string()))
                    .flatten();
                let tasks = rows
                    .iter()
                    .map(|row| TaskView { args: None, result: None, ..row.view() })
                    .collect();
                encode(&ListReply { tasks, next_before })
            }
            Command::Cancel { id } => {
                if let Some(owner) = self.owner_of(tx, id)?
                    && let Err(error) = pending.caller.may_change("task", &owner)
                {
                    out.replies.push((pending, Err(error.into())));
                    return Ok(());
                }
                match self.report_all(tx, now, id, vec![Report::Cancel], None, out)? {
                    Ok(_) => encode(&TaskView::brief(id, TaskState::Cancelled)),
                    Err(refused) => Err(refusal(id, &refused)),
                }
            }
            Command::Wait { id, timeout_ms } => {
                if let Some(owner) = self.owner_of(tx, id)?
                    && let Err(error) = pending.caller.may_read("task", &owner)
                {
                    out.replies.push((pending, Err(error.into())));
                    return Ok(());
                }
                if self.active.contains_key(&id) && timeout_ms > 0 {
                    self.add_waiter(id, pending, now + timeout_ms, out);
                    return Ok(());
                }
                full_view(tx, id)
            }
            Command::Claim { id, worker } => {
                match self.report_all(tx, now, id, vec![Report::Claim { worker }], None, out)? {
                    Ok(life) => encode(&ClaimReply {
                        run: true,
                        state: life.state.as_str().to_owned(),
                        attempt: life.attempts,
                    }),
                    Err(Refused::Finished(state)) => encode(&ClaimReply {
                        run: false,
                        state: state.as_str().to_owned(),
                        attempt: 0,
                    }),
                    Err(refused) => Err(refusal(id, &refused)),
                }
            }
            Command::Progress { id, worker, percent } => {
                let report = Report::Progress { worker, percent };
                match self.report_all(tx, now, id, vec![report], None, out)? {
                    Ok(_) => encode(&ProgressReply { stop: false }),
                    Err(Refused::Finished(_)) => encode(&ProgressReply { stop: true }),
                    Err(refused) => Err(refusal(id, &refused)),
                }
            }
            Command::Finish { id, worker, claim, outcome } => {
                let mut reports = Vec::with_capacity(2);
                if claim {
                    reports.push(Report::Claim { worker: worker.clone() });
                }
                let result = match outcome {
                    Ok(result) => {
                        reports.push(Report::Complete { worker });
                        Some(result)
                    }
                    Err((error, retry_in_ms)) => {
                        reports.push(Report::Fail { worker, error, retry_in_ms });
                        None
                    }
                };
                match self.report_all(tx, now, id, reports, result.as_deref(), out)? {
                    Ok(life) => encode(&FinishReply {
                        state: life.state.as_str().to_owned(),
                        accepted: true,
                    }),
                    Err(Refused::Finished(state)) => {
                        encode(&FinishReply { state: state.as_str().to_owned(), accepted: false })
                    }
                    Err(refused) => Err(refusal(id, &refused)),
                }
            }
        };
        out.replies.push((pending, reply));
        Ok(())
    }
}
