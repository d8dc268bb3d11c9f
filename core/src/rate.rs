//! A token bucket per key (a person): `rate_per_sec` tokens a second, at most `burst` saved up.
//! Time comes in as an argument; buckets that have filled up again are forgotten, and the
//! number of keys held is bounded.

use std::collections::HashMap;

/// Token buckets by key.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate_per_sec: u64,
    burst: u64,
    keys_max: usize,
    /// Milli-tokens in each bucket, and when it was last filled (ms).
    buckets: HashMap<String, (u64, u64)>,
}

/// Why a take was refused: try again in this many milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_in_ms: u64,
}

impl RateLimiter {
    /// `rate_per_sec` and `burst` at least 1.
    pub fn new(rate_per_sec: u64, burst: u64, keys_max: usize) -> Self {
        Self {
            rate_per_sec: rate_per_sec.max(1),
            burst: burst.max(1),
            keys_max,
            buckets: HashMap::new(),
        }
    }

    fn full(&self) -> u64 {
        self.burst.saturating_mul(1000)
    }

    /// What `key`'s bucket holds at `now_ms`, in milli-tokens.
    fn level(&self, key: &str, now_ms: u64) -> u64 {
        match self.buckets.get(key) {
            None => self.full(),
            Some(&(milli, at_ms)) => {
                // `rate_per_sec` tokens a second is `rate_per_sec` milli-tokens a millisecond.
                let refill = now_ms.saturating_sub(at_ms).saturating_mul(self.rate_per_sec);
                milli.saturating_add(refill).min(self.full())
            }
        }
    }

    /// Takes `tokens` from `key`'s bucket, or says when there will be enough. A take larger
    /// than the burst is never possible: it is refused with the time to fill the whole bucket.
    pub fn take(&mut self, key: &str, tokens: u64, now_ms: u64) -> Result<(), Limited> {
        let wanted = tokens.saturating_mul(1000);
        let level = self.level(key, now_ms);
        if wanted > self.full() || level < wanted {
            let missing = wanted.min(self.full()).saturating_sub(level).max(1);
            return Err(Limited { retry_in_ms: missing.div_ceil(self.rate_per_sec) });
        }
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.keys_max {
            self.forget(now_ms);
            if self.buckets.len() >= self.keys_max {
                return Err(Limited { retry_in_ms: 1000 });
            }
        }
        self.buckets.insert(key.to_owned(), (level - wanted, now_ms));
        Ok(())
    }

    /// Forgets every bucket that is full again (as good as never used).
    pub fn forget(&mut self, now_ms: u64) {
        let (rate, full) = (self.rate_per_sec, self.full());
        self.buckets.retain(|_, (milli, at_ms)| {
            milli.saturating_add(now_ms.saturating_sub(*at_ms).saturating_mul(rate)) < full
        });
    }

    /// Keys with a bucket that is not full.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut limiter = RateLimiter::new(10, 5, 100);
        for _ in 0..5 {
            assert_eq!(limiter.take("ann", 1, 0), Ok(()));
        }
        assert_eq!(limiter.take("ann", 1, 0), Err(Limited { retry_in_ms: 100 }));
        // Someone else is not held back.
        assert_eq!(limiter.take("ben", 5, 0), Ok(()));
        // A tenth of a second gives ann one more.
        assert_eq!(limiter.take("ann", 1, 100), Ok(()));
        assert_eq!(limiter.take("ann", 1, 150), Err(Limited { retry_in_ms: 50 }));
        // Several at once need room for all of them.
        assert_eq!(limiter.take("ann", 3, 200), Err(Limited { retry_in_ms: 200 }));
        assert_eq!(limiter.take("ann", 3, 400), Ok(()));
        // More than the burst never fits.
        assert_eq!(limiter.take("cat", 6, 0), Err(Limited { retry_in_ms: 1 }));
    }

    #[test]
    fn full_buckets_are_forgotten_and_keys_are_bounded() {
        let mut limiter = RateLimiter::new(1, 2, 2);
        limiter.take("a", 1, 0).unwrap();
        limiter.take("b", 1, 0).unwrap();
        assert_eq!(limiter.take("c", 1, 0), Err(Limited { retry_in_ms: 1000 }));
        // After a second both are full again: forgotten, and c gets a bucket.
        assert_eq!(limiter.take("c", 1, 1_000), Ok(()));
        assert_eq!(limiter.len(), 1);
        limiter.forget(5_000);
        assert!(limiter.is_empty());
    }

    #[test]
    fn never_more_than_rate_times_time_plus_burst() {
        use proptest::prelude::*;
        proptest!(|(rate in 1u64..50, burst in 1u64..50, steps in proptest::collection::vec((0u64..200, 1u64..5), 1..200))| {
            let mut limiter = RateLimiter::new(rate, burst, 10);
            let (mut now, mut taken) = (0u64, 0u64);
            for (gap, tokens) in steps {
                now += gap;
                if limiter.take("k", tokens, now).is_ok() {
                    taken += tokens;
                }
                prop_assert!(taken * 1000 <= burst * 1000 + now * rate);
            }
        });
    }
}
