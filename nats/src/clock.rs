//! The wall clock, read only in the shell: `agora-core` receives `now_ms` as an argument.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch. Leases are wall-clock based so they survive a restart;
/// a clock stepped backwards lengthens leases, it never lets two owners hold one account.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
