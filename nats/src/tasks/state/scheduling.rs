use super::*;

impl Tasks {
    /// Creates or replaces a schedule (the caller may act on its owner: checked at parse).
    pub(super) fn put_schedule(
        &mut self,
        tx: &Transaction<'_>,
        row: ScheduleRow,
        out: &mut Outbox,
    ) -> Result<Result<Bytes, ServiceError>, StoreError> {
        let subject = subject::recurring(&row.owner, &row.name);
        let existing = store::schedule(tx, &row.owner, &row.name)?;
        if existing.is_none() {
            let (mine, all) = store::schedule_counts(tx, &row.owner)?;
            let full = if mine >= schedules::SCHEDULES_PER_OWNER_MAX {
                Some(format!("{} has {mine} schedules (the limit)", row.owner))
            } else if all >= schedules::SCHEDULES_MAX {
                Some(format!("there are {all} schedules (the limit)"))
            } else {
                None
            };
            if let Some(full) = full {
                // The endpoint put it in the stream already: take it out again.
                out.changes.push(Change::Remove { subject });
                return Ok(Err(ServiceError::new(ErrorCode::Busy, full)));
            }
        }
        if row.paused {
            out.changes.push(Change::Remove { subject });
        }
        store::put_schedule(tx, &row)?;
        let stored = store::schedule(tx, &row.owner, &row.name)?.unwrap_or(row);
        Ok(encode(&stored.view()))
    }

    pub(super) fn schedule_action(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        owner: &str,
        name: &str,
        action: ScheduleAction,
        out: &mut Outbox,
    ) -> Result<Result<Bytes, ServiceError>, StoreError> {
        let Some(row) = store::schedule(tx, owner, name)? else {
            return Ok(Err(ServiceError::new(
                ErrorCode::NotFound,
                format!("{owner} has no schedule {name:?}"),
            )));
        };
        let subject = subject::recurring(owner, name);
        match action {
            ScheduleAction::Pause => {
                store::set_paused(tx, owner, name, true, now)?;
                if !row.paused {
                    out.changes.push(Change::Remove { subject });
                }
            }
            ScheduleAction::Resume => {
                store::set_paused(tx, owner, name, false, now)?;
                if row.paused {
                    out.changes.push(Change::recurring(owner, name, row.spec, row.time_zone));
                }
            }
            ScheduleAction::Delete => {
                store::delete_schedule(tx, owner, name)?;
                out.changes.push(Change::Remove { subject });
                return Ok(encode(&ScheduleRow { paused: true, ..row }.view()));
            }
        }
        let stored = store::schedule(tx, owner, name)?;
        Ok(stored.map_or_else(
            || {
                Err(ServiceError::new(
                    ErrorCode::NotFound,
                    format!("{owner} has no schedule {name:?}"),
                ))
            },
            |row| encode(&row.view()),
        ))
    }

    /// A run of the server's scheduler: a delayed task goes to the work queue; a recurring
    /// schedule submits its task, once per run.
    pub(super) fn fire(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        fire: Fire,
        message: Box<jetstream::Message>,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        match fire {
            Fire::Task(id) => {
                if let Some(active) = self.active.get_mut(&id)
                    && active.held
                {
                    active.held = false;
                    store::release(tx, id)?;
                    if self.admit(id) {
                        self.enqueue_stored(tx, id, out)?;
                    }
                }
            }
            Fire::Recurring { owner, name, seq, next_ms } => {
                let client_id = format!("schedule:{name}:{seq}");
                let row = store::schedule(tx, &owner, &name)?;
                // A paused or deleted schedule's run is dropped; a run seen before is done.
                if let Some(row) = row.filter(|row| !row.paused)
                    && store::by_client_id(tx, &owner, &client_id)?.is_none()
                {
                    let priority = Priority::parse(Some(&row.priority)).unwrap_or(Priority::Normal);
                    let task = Submission {
                        owner: &owner,
                        op: &row.op,
                        args: &row.args,
                        priority,
                        span: None,
                        run_at_ms: None,
                        schedule: Some(&name),
                        ttl_ms: None,
                        workflow: None,
                    };
                    match self.submit(tx, now, &task, Some(&client_id), out)? {
                        Ok((id, _)) => store::record_run(tx, &owner, &name, now, id, next_ms)?,
                        Err(error) if error.code == ErrorCode::Busy => {
                            out.naks.push(*message);
                            return Ok(());
                        }
                        Err(error) => {
                            tracing::warn!(%owner, %name, %error, "a scheduled run was refused");
                        }
                    }
                }
            }
        }
        out.acks.push(*message);
        Ok(())
    }
}
