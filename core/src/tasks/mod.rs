//! Tasks: what an op computes ([`ops`]), how a task goes from queued to finished
//! ([`lifecycle`]), and when it runs ([`schedule`]).

pub mod lifecycle;
pub mod ops;
pub mod schedule;
