//! Where a benchmark's CPU goes: the CPU time each process of the run (nats-server, every
//! component, the echo responders, this client) used while a measured side ran, per operation.
//! On a machine whose cores every process shares, a side's throughput is bounded by its CPU
//! per operation summed over all of them; this shows which process pays for what.
//!
//! Read from `/proc/<pid>/stat` (user and system time of every thread, ended ones included), in
//! the kernel's `USER_HZ` ticks (100 per second on Linux); elsewhere nothing is measured.

use std::collections::BTreeMap;
use std::time::Duration;

/// Ticks per second of `/proc/<pid>/stat`'s times (`USER_HZ`, fixed by the Linux ABI).
const USER_HZ: u64 = 100;

/// The processes a run measures: a name each (several processes may share one).
#[derive(Debug, Clone, Default)]
pub struct Processes(Vec<(String, u32)>);

impl Processes {
    pub fn new(processes: Vec<(String, u32)>) -> Self {
        Self(processes)
    }

    /// CPU time used so far, summed per name (processes that cannot be read count nothing).
    pub fn read(&self) -> CpuTimes {
        let mut times = BTreeMap::new();
        for (name, pid) in &self.0 {
            let used = cpu_time(*pid).unwrap_or_default();
            *times.entry(name.clone()).or_insert(Duration::ZERO) += used;
        }
        CpuTimes(times)
    }
}

/// CPU time per process name, at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuTimes(BTreeMap<String, Duration>);

impl CpuTimes {
    /// What was used from `earlier` to `self`.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes(
            self.0
                .iter()
                .map(|(name, now)| {
                    let before = earlier.0.get(name).copied().unwrap_or_default();
                    (name.clone(), now.saturating_sub(before))
                })
                .collect(),
        )
    }

    /// Adds what another interval used.
    pub fn add(&mut self, other: &CpuTimes) {
        for (name, used) in &other.0 {
            *self.0.entry(name.clone()).or_insert(Duration::ZERO) += *used;
        }
    }

    pub fn get(&self, name: &str) -> Duration {
        self.0.get(name).copied().unwrap_or_default()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn total(&self) -> Duration {
        self.0.values().sum()
    }
}

/// A process's user plus system time so far (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

fn parse_stat(stat: &str) -> Option<Duration> {
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses; fields follow the
    // last `)`. utime and stime are fields 14 and 15, so the 12th and 13th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 1000 / USER_HZ))
}

/// One measured side's CPU: per process name, and in all, per operation.
#[derive(Debug, Clone)]
pub struct SideCpu {
    pub label: String,
    pub operations: u64,
    pub used: CpuTimes,
    pub wall: Duration,
}

/// Prints CPU microseconds per operation for each side, one column per process name, and the
/// cores the run kept busy.
pub fn print(sides: &[SideCpu]) {
    let Some(first) = sides.first() else { return };
    if first.used.total().is_zero() && sides.iter().all(|s| s.used.total().is_zero()) {
        return;
    }
    let mut names: Vec<&str> = first.used.names().collect();
    for side in sides {
        for name in side.used.names() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    println!(
        "\nCPU µs per operation (each process of the run; busy: the cores they kept busy meanwhile; \
         the kernel's own writeback threads are not counted):"
    );
    let mut header = format!("{:<24}", "side");
    for name in &names {
        header.push_str(&format!(" {name:>12}"));
    }
    header.push_str(&format!(" {:>9} {:>6}", "total", "busy"));
    println!("{header}");
    for side in sides {
        let per = |used: Duration| used.as_secs_f64() * 1e6 / side.operations.max(1) as f64;
        let mut row = format!("{:<24}", side.label);
        for name in &names {
            row.push_str(&format!(" {:>12.1}", per(side.used.get(name))));
        }
        let busy = side.used.total().as_secs_f64() / side.wall.as_secs_f64().max(1e-9);
        row.push_str(&format!(" {:>9.1} {busy:>6.2}", per(side.used.total())));
        println!("{row}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_user_plus_system_time_whatever_the_command_is_called() {
        let line = "4242 (agora ledger) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat(line), Some(Duration::from_millis(2_000)));
        let odd = "7 (a) b (c)) R 1 2 3 4 5 6 7 8 9 10 1 2 0 0 20 0 1 0 1 0 0";
        assert_eq!(parse_stat(odd), Some(Duration::from_millis(30)));
        assert_eq!(parse_stat("7 (short) R 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn intervals_subtract_and_add_per_name() {
        let at = |pairs: &[(&str, u64)]| {
            CpuTimes(
                pairs.iter().map(|(n, ms)| (n.to_string(), Duration::from_millis(*ms))).collect(),
            )
        };
        let before = at(&[("ledger", 100), ("nats-server", 50)]);
        let after = at(&[("ledger", 160), ("nats-server", 80), ("coins", 5)]);
        let used = after.since(&before);
        assert_eq!(used, at(&[("ledger", 60), ("nats-server", 30), ("coins", 5)]));
        let mut sum = used.clone();
        sum.add(&used);
        assert_eq!(sum.get("ledger"), Duration::from_millis(120));
        assert_eq!(sum.total(), Duration::from_millis(190));
        assert_eq!(sum.get("absent"), Duration::ZERO);
    }

    #[test]
    fn this_process_reads_its_own_cpu_time() {
        let me = Processes::new(vec![("me".into(), std::process::id())]);
        let before = me.read();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        // Spins until the kernel counted 50 ms of CPU for this process (however busy the
        // machine is), or fails at the deadline.
        while me.read().since(&before).get("me") < Duration::from_millis(50) {
            assert!(std::time::Instant::now() < deadline, "no CPU time counted");
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(x);
        }
    }
}
