use super::*;

impl Tasks {
    /// Takes `tasks` from a person's submit rate (components are not limited).
    pub(super) fn take_submits(
        &mut self,
        owner: &str,
        tasks: u64,
        now: u64,
    ) -> Result<(), ServiceError> {
        if owner == agora_core::identity::SERVICE_OWNER {
            return Ok(());
        }
        self.submits.take(owner, tasks, now).map_err(|limited| {
            ServiceError::new(
                ErrorCode::RateLimited,
                format!(
                    "{owner} submits faster than {} tasks a second (at most {} at once); retry \
                     in {} ms",
                    self.config.user_submit_rate,
                    self.config.user_submit_burst,
                    limited.retry_in_ms
                ),
            )
        })
    }

    pub(super) fn add_waiter(
        &mut self,
        id: u64,
        pending: Pending,
        deadline_ms: u64,
        out: &mut Outbox,
    ) {
        if self.waiter_count >= WAITERS_MAX {
            let busy =
                ServiceError::new(ErrorCode::Busy, "too many waiting requests; poll with get");
            out.replies.push((pending, Err(busy)));
            return;
        }
        self.waiter_count += 1;
        self.waiters.entry(id).or_default().push(Waiter { pending, deadline_ms });
    }

    /// Who owns task `id`, if it exists.
    pub(super) fn owner_of(
        &self,
        tx: &Transaction<'_>,
        id: u64,
    ) -> Result<Option<String>, StoreError> {
        if let Some(active) = self.active.get(&id) {
            return Ok(Some(active.owner.clone()));
        }
        Ok(store::get(tx, id, false)?.map(|row| row.owner))
    }

    /// Cancels task `id` if it is unfinished (a workflow stopped its step).
    pub(in crate::tasks) fn cancel_task(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        id: u64,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        self.report_all(tx, now, id, vec![Report::Cancel], None, out).map(drop)
    }

    /// Accepts a submission: `Ok(Ok((id, state)))`, or a refusal.
    pub(in crate::tasks) fn submit(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        task: &Submission<'_>,
        client_id: Option<&str>,
        out: &mut Outbox,
    ) -> Result<Result<(u64, TaskState), ServiceError>, StoreError> {
        let Submission { owner, op, args, priority, span, run_at_ms, schedule, ttl_ms, workflow } =
            *task;
        if let Some(client_id) = client_id
            && let Some(existing) = store::by_client_id(tx, owner, client_id)?
        {
            let same = existing.op == op
                && existing.priority == priority.as_str()
                && existing.args.as_deref() == Some(args);
            return Ok(if same {
                Ok((existing.id, existing.lifecycle.state))
            } else {
                Err(ServiceError::invalid(format!(
                    "id {client_id:?} was already used for a different task ({})",
                    existing.id
                )))
            });
        }
        if workflow.is_none() && self.active.len() >= self.config.pending_max {
            return Ok(Err(ServiceError::new(
                ErrorCode::Busy,
                format!(
                    "{} tasks are waiting or running (the limit); retry later",
                    self.active.len()
                ),
            )));
        }
        let id = self.next_id;
        let task = NewTask {
            id,
            owner,
            client_id,
            op,
            args,
            priority: priority.as_str(),
            submitted_ms: now,
            run_at_ms,
            held: run_at_ms.is_some(),
            schedule,
            ttl_ms,
            workflow,
        };
        store::insert(tx, &task)?;
        self.next_id += 1;
        let queued = TaskEventWire {
            event: "queued".to_owned(),
            at_ms: now,
            run_at_ms,
            ..Default::default()
        };
        store::append_event(tx, id, 0, &serde_json::to_string(&queued).unwrap_or_default())?;
        let active = Active {
            owner: owner.to_owned(),
            life: Lifecycle::new(),
            events: 1,
            held: run_at_ms.is_some(),
            in_queue: false,
        };
        self.active.insert(id, active);
        let subject = subject::events(owner, &id.to_string());
        out.events.push(Event::new(subject, event_payload(id, queued)));
        match run_at_ms {
            // The server's scheduler hands it over at its time.
            Some(at) => {
                let at = agora_core::tasks::schedule::Spec::At(at).header();
                out.changes.push(Change::delayed(id, at));
            }
            None if self.admit(id) => {
                let message = queue::message(id, op, args);
                out.enqueue.push(queue::Queued { id, priority, message, span });
            }
            None => {}
        }
        Ok(Ok((id, TaskState::Queued)))
    }

    /// Applies reports in order (all or nothing) to an unfinished task, stores the task once
    /// and its events, and answers the task's waiters once it finished.
    pub(super) fn report_all(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        id: u64,
        reports: Vec<Report>,
        result: Option<&str>,
        out: &mut Outbox,
    ) -> Result<Result<Lifecycle, Refused>, StoreError> {
        let Some(active) = self.active.get_mut(&id) else {
            return Ok(match store::get(tx, id, false)? {
                Some(row) => Err(Refused::Finished(row.lifecycle.state)),
                None => Err(Refused::Missing),
            });
        };
        let mut life = active.life.clone();
        let owner = active.owner.clone();
        let held = active.held;
        let in_queue = active.in_queue;
        let mut events = Vec::with_capacity(reports.len());
        for report in reports {
            match life.apply(now, report) {
                Ok(Some(event)) => events.push(event),
                Ok(None) => {}
                Err(TaskError::Finished(state)) => return Ok(Err(Refused::Finished(state))),
                Err(error) => return Ok(Err(Refused::Invalid(error))),
            }
        }
        active.life = life.clone();
        if events.is_empty() {
            return Ok(Ok(life));
        }
        store::update(tx, id, &life, result)?;
        let mut wires = Vec::with_capacity(events.len());
        for event in &events {
            let wire = TaskEventWire::from_event(event, now);
            let keep = !matches!(event, TaskEvent::Progress { .. })
                || active.events < HISTORY_MAX.saturating_sub(HISTORY_OUTCOME_ROOM);
            if keep && active.events < HISTORY_MAX {
                let text = serde_json::to_string(&wire).unwrap_or_default();
                store::append_event(tx, id, active.events, &text)?;
                active.events += 1;
            }
            match event {
                TaskEvent::Cancelled { was_running: true } => out.cancels.push(id),
                TaskEvent::Cancelled { was_running: false } if held => {
                    out.changes
                        .push(Change::Remove { subject: subject::scheduled_task(&id.to_string()) });
                }
                TaskEvent::Cancelled { was_running: false } if in_queue => out.purges.push(id),
                TaskEvent::Cancelled { was_running: false } => {
                    // It was waiting for a place: it simply never gets one.
                    if let Some(ids) = self.waiting.get_mut(&owner) {
                        ids.retain(|waiting| *waiting != id);
                    }
                }
                _ => {}
            }
            wires.push(wire);
        }
        if life.state.is_terminal() {
            self.active.remove(&id);
            if in_queue {
                self.leave_queue(tx, id, &owner, out)?;
            }
            if let Some(waiters) = self.waiters.remove(&id) {
                self.waiter_count -= waiters.len();
                // The task as `get` and `wait` show it (read inside this transaction, so it is
                // the row just written): one view of a task, whoever asks.
                let reply = full_view(tx, id);
                for waiter in waiters {
                    out.replies.push((waiter.pending, reply.clone()));
                }
            }
            if let Some(last) = wires.last_mut() {
                last.result = result.and_then(|text| RawValue::from_string(text.to_owned()).ok());
            }
        }
        let subject = subject::events(&owner, &id.to_string());
        for wire in wires {
            out.events.push(Event::new(subject.clone(), event_payload(id, wire)));
        }
        if life.state.is_terminal() {
            // Its workflow's next steps start in this same transaction.
            self.workflow_task_finished(tx, now, id, life.state, out)?;
        }
        Ok(Ok(life))
    }
}
