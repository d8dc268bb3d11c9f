use super::*;

/// A refused leg's error as the trader should read it.
pub(super) fn refused(order: &Order, leg: LegKind, error: ServiceError) -> ServiceError {
    if error.code != ErrorCode::InsufficientFunds {
        return error;
    }
    let message = match (order.side, leg) {
        (Side::Buy, LegKind::Pay) => {
            return ServiceError::new(
                ErrorCode::InsufficientFunds,
                format!(
                    "{} cannot pay {} for {} {}",
                    order.user, order.total, order.quantity, order.symbol
                ),
            );
        }
        (Side::Sell, LegKind::Pay) => {
            return ServiceError::new(
                ErrorCode::InsufficientFunds,
                format!("the exchange cannot pay {} for this sale now", order.total),
            );
        }
        (Side::Buy, LegKind::Units) => {
            format!("{}: {} wanted, fewer available", order.symbol, order.quantity)
        }
        (Side::Sell, LegKind::Units) => {
            format!("{} holds fewer than {} {}", order.user, order.quantity, order.symbol)
        }
    };
    ServiceError::new(ErrorCode::InsufficientQuantity, message)
}

/// An order as the ledger's postings of its two legs tell it (`None` unless both are there).
pub(super) fn view_of(
    user: &AccountId,
    id: &str,
    legs: &[(LegKind, Vec<PostingWire>)],
) -> Option<OrderView> {
    let postings = |kind: LegKind| legs.iter().find(|(k, _)| *k == kind).map(|(_, p)| p);
    let mine = |p: &&PostingWire| p.account == user.as_str();
    let units = postings(LegKind::Units)?.iter().find(mine)?;
    let pay = postings(LegKind::Pay)?.iter().find(mine)?;
    let side = match units.kind.as_str() {
        "transfer_in" => Side::Buy,
        "transfer_out" => Side::Sell,
        _ => return None,
    };
    let quantity = u64::try_from(units.amount).ok()?;
    let total = u64::try_from(pay.amount).ok()?;
    Some(OrderView {
        id: id.to_owned(),
        user: user.to_string(),
        symbol: units.asset.clone(),
        side: side.as_str().to_owned(),
        quantity,
        unit_price: total.checked_div(quantity)?,
        total,
        state: OrderView::DONE.to_owned(),
        created_ms: units.at,
        settled_ms: units.at,
        holding: u64::try_from(units.balance).ok(),
    })
}

impl Ctx {
    /// A buy or sell: priced, then one linked pair applied by the ledger.
    pub(super) async fn order(
        &self,
        request: OrderRequest,
        side: Side,
    ) -> Result<OrderView, ServiceError> {
        let user = AccountId::parse(&request.user)?;
        if user == self.exchange_account {
            return Err(ServiceError::invalid("the exchange's own account cannot trade"));
        }
        let symbol = Symbol::parse(&request.symbol)?;
        let quantity = coins::quantity(request.quantity)?;
        let id = request.id.unwrap_or_else(|| nuid::next().to_string());
        coins::check_order_id(&id)?;
        // Counted before it is priced: a removal that begins later waits for it.
        *self
            .ordering
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(symbol.clone())
            .or_default() += 1;
        let _ordering = Ordering { ctx: self, symbol: symbol.clone() };
        let order = self.catalogue().quote(user, id, symbol, side, quantity)?;
        let legs = order.legs(&self.exchange_account);
        let operations = legs
            .iter()
            .enumerate()
            .map(|(index, leg)| OperationRequest {
                op: OperationKind::Transfer,
                from: Some(leg.from.to_string()),
                to: Some(leg.to.to_string()),
                asset: (!leg.asset.is_money()).then(|| leg.asset.to_string()),
                amount: Some(i64::try_from(leg.amount).unwrap_or(i64::MAX)),
                id: Some(leg.id.clone()),
                linked: index == 0,
                ..OperationRequest::default()
            })
            .collect();
        let results = self.orders.apply(operations).await?;
        let mut postings = Vec::new();
        let mut refusal = None;
        for (leg, result) in legs.iter().zip(results) {
            match result {
                OperationResult::Applied { postings: Some(p) } => postings.push((leg.kind, p)),
                OperationResult::Applied { postings: None } => {
                    return Err(ServiceError::new(ErrorCode::Internal, "postings missing"));
                }
                OperationResult::Failed { error } if error.code == ErrorCode::LinkedFailed => {}
                OperationResult::Failed { error } => refusal = Some((leg.kind, error)),
            }
        }
        match refusal {
            None => view_of(&order.user, &order.id, &postings).ok_or_else(|| {
                ServiceError::new(ErrorCode::Internal, "the ledger's postings are not an order")
            }),
            // The id was used before: for this same order (then that is the answer, even if the
            // price changed since), or for another one.
            Some((_, error)) if error.code == ErrorCode::InvalidRequest => {
                match self.lookup(&order.user, &order.id).await? {
                    Some(existing)
                        if existing.symbol == order.symbol.as_str()
                            && existing.side == side.as_str()
                            && existing.quantity == order.quantity =>
                    {
                        Ok(existing)
                    }
                    Some(_) => Err(ServiceError::invalid(format!(
                        "order id {} of {} was used for another order",
                        order.id, order.user
                    ))),
                    None => Err(error),
                }
            }
            Some((kind, error)) => Err(refused(&order, kind, error)),
        }
    }

    /// An order by user and id: from the ledger's records of its legs (while it keeps them),
    /// else from the trade log.
    pub(super) async fn lookup(
        &self,
        user: &AccountId,
        id: &str,
    ) -> Result<Option<OrderView>, ServiceError> {
        let ids = [LegKind::Pay, LegKind::Units].map(|kind| coins::leg_id(user, id, kind));
        let reply = self.ledger.ledger_operations(ids.to_vec()).await.map_err(ledger_error)?;
        let mut postings = Vec::new();
        for entry in reply.operations {
            let kind = if entry.id == ids[0] { LegKind::Pay } else { LegKind::Units };
            let record: OperationRecord =
                serde_json::from_str(entry.record.get()).map_err(|e| {
                    ServiceError::new(ErrorCode::Internal, format!("record {}: {e}", entry.id))
                })?;
            postings.push((kind, record.postings));
        }
        if let Some(view) = view_of(user, id, &postings) {
            return Ok(Some(view));
        }
        let lookup = Command::Lookup { user: user.clone(), id: id.to_owned() };
        let Answer::Order(order) = self.call(lookup).await? else {
            return Err(wrong_answer());
        };
        Ok(order.map(|order| *order))
    }
}
