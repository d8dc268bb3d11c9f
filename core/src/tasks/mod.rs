//! Tasks: what an op computes ([`ops`]) and how a task goes from queued to finished
//! ([`lifecycle`]).

pub mod lifecycle;
pub mod ops;
