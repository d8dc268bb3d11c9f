use super::*;

impl Ledger {
    /// `agora.ledger.apply`: the requests applied to the book, their changes, history,
    /// records and events written, one result each.
    pub(super) fn apply_requests(
        &mut self,
        tx: &Transaction<'_>,
        now_ms: u64,
        requests: &[LedgerRequest],
        shown: &[Option<String>],
        detail: bool,
        events: &mut Vec<Event>,
    ) -> Result<Result<Bytes, ServiceError>, StoreError> {
        self.load_for(tx, requests)?;
        if !self.locks.is_empty() {
            // A lease holder writes its accounts alone (agora.ledger.lock): wait for it.
            let mut held: Vec<AccountId> = Vec::new();
            for request in requests {
                let keys = self.touched(request);
                held.extend(
                    keys.into_iter()
                        .filter(|(account, _)| self.locks.holder(now_ms, account).is_some())
                        .map(|(account, _)| account),
                );
            }
            if !held.is_empty() {
                held.sort();
                held.dedup();
                let error = agora_core::LockError::Locked { accounts: held };
                return Ok(Err(error.into()));
            }
        }
        let recorded = self.recorded(tx, requests)?;
        let outcomes = book::apply_batch(&mut self.book, requests, now_ms, &recorded);
        // The commit time its postings, history entries and events carry.
        let at = self.stamp(now_ms);
        let mut results: Vec<OperationResult> = Vec::with_capacity(outcomes.len());
        let mut applied = 0;
        for outcome in &outcomes {
            let result = match outcome {
                Outcome::Applied(postings) => OperationResult::Applied {
                    postings: detail
                        .then(|| postings.iter().map(|p| PostingWire::at(p, at)).collect()),
                },
                Outcome::Replay(wires) => {
                    OperationResult::Applied { postings: detail.then(|| wires.clone()) }
                }
                Outcome::Refused(error) => OperationResult::Failed { error: error.clone().into() },
                Outcome::SameAs(first) => results[*first].clone(),
            };
            if matches!(result, OperationResult::Applied { .. }) {
                applied += 1;
            }
            results.push(result);
        }
        let written: Vec<(usize, &[Posting])> = outcomes
            .iter()
            .enumerate()
            .filter_map(|(index, outcome)| match outcome {
                Outcome::Applied(postings) => Some((index, postings.as_slice())),
                _ => None,
            })
            .collect();
        let postings: Vec<(&[Posting], Option<&str>)> =
            written.iter().map(|(index, postings)| (*postings, shown[*index].as_deref())).collect();
        let firsts = self.write_changes(tx, now_ms, &postings, events)?;
        // Each applied operation with an id is recorded: its request, and where its postings
        // are in the history (see `store::Record`).
        for ((index, postings), first) in written.into_iter().zip(firsts) {
            let Some(id) = &requests[index].id else { continue };
            let op = OperationRequest::from(&requests[index].operation);
            let text = serde_json::to_string(&op).map_err(|e| unreadable(id.as_str(), &e))?;
            let record = store::Record { text, entries: Some((first, postings.len() as u64)) };
            if !self.operations.insert(tx, id.as_str(), &record, now_ms)? {
                return Err(StoreError::Corrupt(format!("operation id {id} appeared")));
            }
        }
        let failed = results.len() - applied;
        Ok(encode(&ApplyReply { results, applied, failed }))
    }
}
