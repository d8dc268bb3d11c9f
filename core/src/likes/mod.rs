//! Likes: a count per item that any number of nodes take likes for and always agree on
//! ([`counter`]), and the lease that elects the one node running anti-entropy rounds
//! ([`lease`]).

pub mod counter;
pub mod lease;

pub use counter::*;
