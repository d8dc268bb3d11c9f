//! Agora's system tests: one test binary (fast to link), one module per component.
//! Each test starts its own nats-server and real component processes (see `agora_tests`).

mod auth;
mod bank;
mod browser;
mod chat;
mod chat_more;
mod cli;
mod coins;
mod contract;
mod faults;
mod files;
mod gateway;
mod identity;
mod ledger;
mod likes;
mod load;
mod metrics;
mod money;
mod replication;
mod schedules;
mod tasks;
mod traces;
mod up;
mod workflows;
