use super::*;

#[test]
fn builders_agree_with_endpoint_constants() {
    let alice = AccountId::parse("alice").expect("valid");
    assert_eq!(ledger::lock(&alice), "agora.ledger.lock.alice");
    assert_eq!(ledger::unlock(&alice), "agora.ledger.unlock.alice");
    assert_eq!(ledger::get(&alice), "agora.ledger.get.alice");
    assert_eq!(ledger::set(&alice), "agora.ledger.set.alice");
    assert_eq!(ledger::BATCH_LOCK_SUBJECT, format!("{}.{}", ledger::GROUP, ledger::BATCH_LOCK));
    assert_eq!(ledger::BATCH_GET_SUBJECT, format!("{}.{}", ledger::GROUP, ledger::BATCH_GET));
    assert_eq!(ledger::BATCH_COMMIT_SUBJECT, format!("{}.{}", ledger::GROUP, ledger::BATCH_COMMIT));
    assert_eq!(ledger::LOCKS_SUBJECT, format!("{}.{}", ledger::GROUP, ledger::LOCKS));
    for (subject, endpoint) in [
        (bank::DEPOSIT_SUBJECT, bank::DEPOSIT),
        (bank::WITHDRAW_SUBJECT, bank::WITHDRAW),
        (bank::BALANCE_SUBJECT, bank::BALANCE),
        (bank::TRANSFER_SUBJECT, bank::TRANSFER),
    ] {
        assert_eq!(subject, format!("{}.{endpoint}", bank::GROUP));
    }
    assert_eq!(bank::events(&alice), "agora.bank.events.alice");
    assert!(ledger::GROUP.starts_with(ROOT) && bank::GROUP.starts_with(ROOT));
    assert_eq!(last_token("agora.ledger.get.alice"), "alice");
    for (subject, endpoint) in [
        (tasks::SUBMIT_SUBJECT, tasks::SUBMIT),
        (tasks::GET_SUBJECT, tasks::GET),
        (tasks::LIST_SUBJECT, tasks::LIST),
        (tasks::CANCEL_SUBJECT, tasks::CANCEL),
        (tasks::WAIT_SUBJECT, tasks::WAIT),
        (tasks::CLAIM_SUBJECT, tasks::CLAIM),
        (tasks::PROGRESS_SUBJECT, tasks::PROGRESS),
        (tasks::FINISH_SUBJECT, tasks::FINISH),
    ] {
        assert_eq!(subject, format!("{}.{endpoint}", tasks::GROUP));
    }
    assert_eq!(tasks::events("alice", "42"), "agora.tasks.events.alice.42");
    assert_eq!(tasks::events_of("alice"), "agora.tasks.events.alice.*");
    assert_eq!(tasks::queue(true, "7"), "agora.tasks.queue.high.7");
    assert_eq!(tasks::queue(false, "7"), "agora.tasks.queue.normal.7");
    assert_eq!(worker::status("w-1"), "agora.worker.w-1.status");
    for (subject, endpoint) in [
        (chat::REGISTER_SUBJECT, chat::REGISTER),
        (chat::HEARTBEAT_SUBJECT, chat::HEARTBEAT),
        (chat::LEAVE_SUBJECT, chat::LEAVE),
        (chat::JOIN_SUBJECT, chat::JOIN),
        (chat::PART_SUBJECT, chat::PART),
        (chat::WHO_SUBJECT, chat::WHO),
        (chat::HISTORY_SUBJECT, chat::HISTORY),
        (chat::SEND_SUBJECT, chat::SEND),
    ] {
        assert_eq!(subject, format!("{}.{endpoint}", chat::GROUP));
    }
    assert_eq!(chat::room("all"), "agora.chat.room.all");
    assert_eq!(chat::dm("bob"), "agora.chat.dm.bob");
    assert_eq!(chat::presence("bob"), "agora.chat.presence.bob");
    for (subject, group, endpoint) in [
        (coins::ASSETS_SUBJECT, coins::GROUP, coins::ASSETS),
        (coins::BUY_SUBJECT, coins::GROUP, coins::BUY),
        (coins::SELL_SUBJECT, coins::GROUP, coins::SELL),
        (coins::ORDER_SUBJECT, coins::GROUP, coins::ORDER),
        (coins::PORTFOLIO_SUBJECT, coins::GROUP, coins::PORTFOLIO),
        (coins::HISTORY_SUBJECT, coins::GROUP, coins::HISTORY),
        (coins::ADD_SUBJECT, coins::ADMIN_GROUP, coins::ADD),
        (coins::REMOVE_SUBJECT, coins::ADMIN_GROUP, coins::REMOVE),
        (coins::UPDATE_SUBJECT, coins::ADMIN_GROUP, coins::UPDATE),
    ] {
        assert_eq!(subject, format!("{group}.{endpoint}"));
    }
    assert_eq!(coins::prices("BTC"), "agora.coins.prices.BTC");
    for (subject, endpoint) in [
        (files::LIST_SUBJECT, files::LIST),
        (files::STAT_SUBJECT, files::STAT),
        (files::GET_SUBJECT, files::GET),
        (files::CACHE_SUBJECT, files::CACHE),
        (files::PUT_SUBJECT, files::PUT),
        (files::DELETE_SUBJECT, files::DELETE),
    ] {
        assert_eq!(subject, format!("{}.{endpoint}", files::GROUP));
    }
    assert_eq!(likes::like("p-1"), "agora.likes.like.p-1");
    assert_eq!(likes::unlike("p-1"), "agora.likes.unlike.p-1");
    assert_eq!(likes::count("p-1"), "agora.likes.count.p-1");
    assert_eq!(likes::TOP_SUBJECT, format!("{}.{}", likes::GROUP, likes::TOP));
    assert_eq!(likes::sync("n1"), "agora.likes.sync.n1");
    assert_eq!(likes::pull("n1"), "agora.likes.pull.n1");
    assert_eq!(likes::events("p-1"), "agora.likes.events.p-1");
    assert_eq!(logs::subject("bank"), "agora.logs.bank");
    for (subject, endpoint) in [
        (auth::SIGNUP_SUBJECT, auth::SIGNUP),
        (auth::LOGIN_SUBJECT, auth::LOGIN),
        (auth::TOKEN_SUBJECT, auth::TOKEN),
        (auth::CHECK_SUBJECT, auth::CHECK),
        (auth::LOGOUT_SUBJECT, auth::LOGOUT),
        (auth::WHOAMI_SUBJECT, auth::WHOAMI),
        (auth::PASSWORD_SUBJECT, auth::PASSWORD),
        (auth::USERS_SUBJECT, auth::USERS),
        (auth::ROLE_SUBJECT, auth::ROLE),
    ] {
        assert_eq!(subject, format!("{}.{endpoint}", auth::GROUP));
    }
    assert_eq!(accounts::inbox_prefix(Some("alice")), "_INBOX.alice");
    assert_eq!(accounts::inbox_prefix(None), "_INBOX._anon");
}
