use super::*;

impl Ledger {
    /// Executes one command inside the open transaction. The outer `Err` is a storage failure
    /// (fails the whole group); the inner `Err` is this command's refusal (changes nothing).
    pub(super) fn execute(
        &mut self,
        tx: &Transaction<'_>,
        now_ms: u64,
        action: &Action,
        events: &mut Vec<Event>,
    ) -> Result<Result<Bytes, ServiceError>, StoreError> {
        match action {
            Action::Lock { accounts, owner, lease_ms, ids, batch } => {
                let grants = match self.locks.lock_many(now_ms, owner, accounts, *lease_ms) {
                    Ok(grants) => grants,
                    Err(error) => return Ok(Err(error.into())),
                };
                let (set_id, touched) = self.sets.create(accounts);
                self.persist_sets(tx, touched.into_iter().chain([set_id]))?;
                let mut locks = Vec::with_capacity(grants.len());
                for grant in grants {
                    locks.push(LockGrant {
                        balance: self.balance(tx, &grant.account)?,
                        account: grant.account.to_string(),
                        token: grant.token,
                        expires_at_ms: grant.expires_at_ms,
                    });
                }
                if !*batch {
                    return Ok(encode(&locks[0]));
                }
                let operations = self.operation_entries(tx, ids.iter().collect::<BTreeSet<_>>())?;
                Ok(encode(&BatchLockReply { locks, operations }))
            }
            Action::Unlock { account, owner, token } => {
                if let Err(error) = self.locks.check_release(now_ms, owner, account, *token) {
                    return Ok(Err(error.into()));
                }
                self.release(tx, now_ms, owner, &[(account.clone(), *token)])?;
                Ok(encode(&UnlockReply { account: account.to_string(), released: true }))
            }
            Action::Get { accounts, asset, owner, batch } => {
                let mut balances = Vec::with_capacity(accounts.len());
                let mut locked = Vec::new();
                for account in accounts {
                    match self.locks.check_read(now_ms, owner.as_deref(), account) {
                        Ok(()) => {
                            let key = (account.clone(), asset.clone());
                            balances.push(BalanceReply::new(
                                account,
                                asset,
                                self.balances(tx, &key)?,
                            ))
                        }
                        Err(error) if !*batch => return Ok(Err(error.into())),
                        Err(_) => locked.push(account.to_string()),
                    }
                }
                if *batch {
                    Ok(encode(&BatchGetReply { balances, locked }))
                } else {
                    let BalanceReply { account, balance, .. } = &balances[0];
                    Ok(encode(&AccountBalance { account: account.clone(), balance: *balance }))
                }
            }
            Action::Commit { owner, writes, operations, release, single, .. } => {
                let ids: Vec<OperationId> = operations.iter().map(|(id, _)| id.clone()).collect();
                let mut lookup_failed = None;
                let checked =
                    ledger::check_commit(&self.locks, now_ms, owner, writes, &ids, release, |id| {
                        match self.operations.contains(tx, id.as_str()) {
                            Ok(known) => known,
                            Err(error) => {
                                lookup_failed = Some(error);
                                true
                            }
                        }
                    });
                if let Some(error) = lookup_failed {
                    return Err(error);
                }
                if let Err(error) = checked {
                    return Ok(Err(error.into()));
                }
                for (id, record) in operations {
                    let record = store::Record { text: record.clone(), entries: None };
                    if !self.operations.insert(tx, id.as_str(), &record, now_ms)? {
                        // check_commit saw the id free a moment ago in this transaction.
                        return Err(StoreError::Corrupt(format!("operation id {id} appeared")));
                    }
                }
                let mut set = Vec::with_capacity(writes.len());
                for (account, _, balance) in writes {
                    let key = (account.clone(), Asset::money());
                    let before = self.balances(tx, &key)?;
                    if *balance < before.debits_pending {
                        return Ok(Err(ServiceError::invalid(format!(
                            "balance of {account} must stay at or above what its pending \
                             transfers hold ({})",
                            before.debits_pending
                        ))));
                    }
                    if balance.checked_add(before.credits_pending).is_none() {
                        return Ok(Err(ServiceError::invalid(format!(
                            "balance of {account} would overflow with its pending credits"
                        ))));
                    }
                    let after = Balances { posted: *balance, ..before };
                    set.push(Posting {
                        account: account.clone(),
                        asset: Asset::money(),
                        kind: EntryKind::Set,
                        amount: balance - before.posted,
                        balances: after,
                    });
                }
                let at = self.stamp(now_ms);
                for posting in &set {
                    let key = (posting.account.clone(), posting.asset.clone());
                    store::set_balances(tx, &key, &posting.balances)?;
                    store::insert_entry(tx, posting, None, at)?;
                    self.book.load_balances(key, posting.balances);
                }
                self.release(tx, now_ms, owner, release)?;
                if *single {
                    let (account, _, balance) = &writes[0];
                    return Ok(encode(&AccountBalance {
                        account: account.to_string(),
                        balance: *balance,
                    }));
                }
                Ok(encode(&BatchCommitReply {
                    written: writes.len(),
                    recorded: operations.len(),
                    released: release.len(),
                }))
            }
            Action::Locks { limit } => {
                let live: Vec<LockInfo> = self
                    .locks
                    .iter()
                    .filter(|(account, _)| self.locks.holder(now_ms, account).is_some())
                    .map(|(account, lock)| LockInfo {
                        account: account.to_string(),
                        owner: lock.owner.clone(),
                        token: lock.token,
                        expires_at_ms: lock.expires_at_ms,
                    })
                    .collect();
                let total = live.len();
                let locks = live.into_iter().take(*limit).collect();
                Ok(encode(&LocksReply { locks, total }))
            }
            Action::Apply { requests, shown, detail } => {
                self.apply_requests(tx, now_ms, requests, shown, *detail, events)
            }
            Action::History(query) => {
                let mut rows =
                    store::history(tx, &HistoryQuery { limit: query.limit + 1, ..query.clone() })?;
                let more = rows.len() > query.limit;
                rows.truncate(query.limit);
                let entries = rows
                    .into_iter()
                    .map(|row| HistoryEntry {
                        seq: row.seq,
                        kind: row.kind,
                        amount: row.amount,
                        balance: row.balances.posted,
                        pending: row.balances.debits_pending,
                        available: row.balances.available(),
                        id: row.id,
                        at: row.at_ms,
                    })
                    .collect();
                Ok(encode(&HistoryReply {
                    account: query.key.0.to_string(),
                    asset: query.key.1.to_string(),
                    entries,
                    more,
                }))
            }
            Action::Balances(account) => {
                let balances = store::balances_of(tx, account)?
                    .into_iter()
                    .map(|(asset, balances)| BalanceReply::new(account, &asset, balances))
                    .collect();
                Ok(encode(&BalancesReply { account: account.to_string(), balances }))
            }
            Action::Supply { asset, except } => {
                let (accounts, balance, pending) = store::supply(tx, asset, except)?;
                Ok(encode(&SupplyReply { asset: asset.to_string(), accounts, balance, pending }))
            }
            Action::Operations(ids) => {
                let operations = self.operation_entries(tx, ids)?;
                Ok(encode(&OperationsReply { operations }))
            }
            Action::Balance { key, at_ms } => {
                let balances = match at_ms {
                    Some(at_ms) => store::balances_at(tx, key, *at_ms)?,
                    None => self.balances(tx, key)?,
                };
                Ok(encode(&BalanceReply {
                    at_ms: *at_ms,
                    ..BalanceReply::new(&key.0, &key.1, balances)
                }))
            }
            Action::Expire => {
                let due = self.book.due(now_ms, EXPIRE_PER_TICK_MAX);
                let mut expired = Vec::with_capacity(due.len());
                for id in due {
                    if let Some(transfer) = self.book.pending(&id).cloned() {
                        for key in <[Key; 2]>::from(transfer.keys()) {
                            self.balances(tx, &key)?;
                        }
                    }
                    if let Some(postings) = book::expire(&mut self.book, &id, now_ms) {
                        expired.push((id, postings));
                    }
                }
                let postings: Vec<(&[Posting], Option<&str>)> =
                    expired.iter().map(|(id, p)| (p.as_slice(), Some(id.as_str()))).collect();
                self.write_changes(tx, now_ms, &postings, events)?;
                Ok(Ok(Bytes::new()))
            }
            Action::Sweep => {
                let mut touched = BTreeSet::new();
                for account in self.locks.expire(now_ms) {
                    touched.extend(self.sets.remove(&account));
                }
                self.persist_sets(tx, touched)?;
                let horizon = now_ms.saturating_sub(self.operation_retention_ms);
                self.operations.prune(
                    tx,
                    horizon,
                    self.operation_records_max,
                    PRUNE_PER_SWEEP_MAX,
                )?;
                store::prune_pending_transfers(tx, horizon, PRUNE_PER_SWEEP_MAX)?;
                if self.book.finished_len() > FINISHED_HELD_MAX {
                    self.book.forget_finished();
                }
                Ok(Ok(Bytes::new()))
            }
        }
    }
}
