//! Tasks: what an op computes ([`ops`]), how a task goes from queued to finished
//! ([`lifecycle`]), when it runs ([`schedule`]), and what it waits for ([`workflow`]).

pub mod lifecycle;
pub mod ops;
pub mod schedule;
pub mod workflow;
