use super::*;

impl Ctx {
    /// Sets the units of `symbol` the exchange's account holds to `units` (a deposit or
    /// withdrawal of the difference; tried again if trades change it in between).
    pub(super) async fn set_units(&self, symbol: &Symbol, units: u64) -> Result<(), ServiceError> {
        for _ in 0..STOCK_TRIES {
            let held = self.ledger.ledger_balances(self.exchange_account.as_str()).await;
            let held = held
                .map_err(ledger_error)?
                .balances
                .into_iter()
                .find(|b| b.asset.as_deref() == Some(symbol.as_str()))
                .map_or(0, |b| b.balance);
            let target = i64::try_from(units).unwrap_or(i64::MAX);
            let (op, amount) = match target - held {
                0 => return Ok(()),
                more if more > 0 => (OperationKind::Deposit, more),
                less => (OperationKind::Withdraw, -less),
            };
            let operation = OperationRequest {
                op,
                account: Some(self.exchange_account.to_string()),
                asset: Some(symbol.to_string()),
                amount: Some(amount),
                ..OperationRequest::default()
            };
            let request = ApplyRequest { operations: vec![operation], detail: false };
            let reply = self.ledger.ledger_apply(&request).await.map_err(ledger_error)?;
            match reply.results.into_iter().next() {
                Some(OperationResult::Applied { .. }) => return Ok(()),
                Some(OperationResult::Failed { error })
                    if error.code == ErrorCode::InsufficientFunds => {}
                Some(OperationResult::Failed { error }) => return Err(error),
                None => return Err(ServiceError::new(ErrorCode::Internal, "no result")),
            }
        }
        Err(ServiceError::new(
            ErrorCode::Busy,
            format!("trades of {symbol} keep changing its units; retry"),
        ))
    }

    /// Removes a listing nobody but the exchange holds units of.
    pub(super) async fn remove(&self, symbol: Symbol) -> Result<Asset, ServiceError> {
        let Answer::Asset(_) = self.call(Command::Delist { symbol: symbol.clone() }).await? else {
            return Err(wrong_answer());
        };
        let outcome = self.check_unheld(&symbol).await;
        let removed = outcome.is_ok();
        let answer = self.call(Command::FinishDelisting { symbol, removed }).await;
        outcome?;
        match answer? {
            Answer::Asset(asset) => Ok(asset),
            _ => Err(wrong_answer()),
        }
    }

    /// Waits for the orders of `symbol` under way, then checks no account but the exchange's
    /// holds (or has pending) units of it.
    pub(super) async fn check_unheld(&self, symbol: &Symbol) -> Result<(), ServiceError> {
        let deadline = tokio::time::Instant::now() + DELIST_WAIT;
        while self.ordering.lock().unwrap_or_else(|p| p.into_inner()).contains_key(symbol) {
            if tokio::time::Instant::now() >= deadline {
                return Err(ServiceError::new(
                    ErrorCode::Busy,
                    format!("orders of {symbol} are under way; retry"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let request = SupplyRequest {
            asset: symbol.to_string(),
            except: vec![self.exchange_account.to_string()],
        };
        let supply = self.ledger.ledger_supply(&request).await.map_err(ledger_error)?;
        if supply.accounts > 0 {
            return Err(coins::CoinsError::InUse(symbol.to_string()).into());
        }
        Ok(())
    }

    /// Deposits the seed catalogue's units to the exchange's account, once (on the first
    /// start, after the catalogue is seeded); tried until the ledger answers.
    pub(super) async fn stock_seed(&self) {
        loop {
            match self.try_stock_seed().await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "cannot stock the exchange's account yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    pub(super) async fn try_stock_seed(&self) -> Result<(), ServiceError> {
        let Answer::Flag(stocked) = self.call(Command::Flag { key: STOCKED }).await? else {
            return Err(wrong_answer());
        };
        if stocked {
            return Ok(());
        }
        // Applied once: the ids make a second try (after a crash before the flag) a replay.
        let operations = coins::seed()
            .into_iter()
            .map(|(asset, units)| OperationRequest {
                op: OperationKind::Deposit,
                account: Some(self.exchange_account.to_string()),
                asset: Some(asset.symbol.to_string()),
                amount: Some(i64::try_from(units).unwrap_or(i64::MAX)),
                id: Some(format!("coins:stock:{}:seed", asset.symbol)),
                ..OperationRequest::default()
            })
            .collect();
        let reply = self
            .ledger
            .ledger_apply(&ApplyRequest { operations, detail: false })
            .await
            .map_err(ledger_error)?;
        if let Some(OperationResult::Failed { error }) =
            reply.results.into_iter().find(|r| matches!(r, OperationResult::Failed { .. }))
        {
            return Err(error);
        }
        let Answer::Done = self.call(Command::SetFlag { key: STOCKED }).await? else {
            return Err(wrong_answer());
        };
        tracing::info!(account = %self.exchange_account, "stocked the exchange's account");
        Ok(())
    }
}
