//! When a task runs: the schedule rules the task service checks before it hands a schedule to
//! the NATS server's scheduler (JetStream message schedules, ADR-51).
//!
//! A schedule is one of
//! - `@at <time>`: once (a delayed task), given as milliseconds since the epoch;
//! - `@every <duration>`: a fixed interval, at least a second (`90s`, `10m`, `1h30m`, `2d`);
//! - `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`;
//! - cron: six fields, seconds first (`0 0 3 * * *`), or the usual five without seconds
//!   (`0 3 * * *`, read as second 0), with ranges, lists, steps and three-letter names, and an
//!   optional IANA time zone (cron only).
//!
//! [`Spec::header`] is the `Nats-Schedule` header the server understands. The server is the
//! final judge (an unknown time zone is found there); these rules catch what can be caught
//! without it, with a message a person can act on.

use std::fmt;

/// Shortest `@every` interval the server runs.
pub const EVERY_MS_MIN: u64 = 1_000;
/// Longest `@every` interval and furthest `@at` time from now.
pub const HORIZON_MS: u64 = 366 * 24 * 3600 * 1000;
/// Longest schedule text and time zone name.
pub const SPEC_BYTES_MAX: usize = 128;
pub const TIME_ZONE_BYTES_MAX: usize = 64;

/// A checked schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// Once, at this time (ms since the epoch).
    At(u64),
    /// Every so many whole seconds.
    Every(u64),
    /// A predefined cron schedule (`@daily`, ...).
    Named(&'static str),
    /// A six-field cron expression, as given (five fields get a leading `0`).
    Cron(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> ScheduleError {
    ScheduleError::Invalid(message.into())
}

const NAMED: [&str; 7] =
    ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"];
const MONTHS: [&str; 12] =
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Spec {
    /// Reads a recurring schedule (`@every`, a name or cron; `@at` is for one task, see
    /// [`Spec::at`]).
    pub fn recurring(text: &str) -> Result<Self, ScheduleError> {
        let text = text.trim();
        if text.is_empty() || text.len() > SPEC_BYTES_MAX {
            return Err(invalid(format!("a schedule is 1..={SPEC_BYTES_MAX} bytes")));
        }
        if let Some(interval) = text.strip_prefix("@every ") {
            let ms = parse_duration_ms(interval.trim())?;
            if ms % 1000 != 0 || !(EVERY_MS_MIN..=HORIZON_MS).contains(&ms) {
                return Err(invalid("@every takes whole seconds, from 1s to 366d"));
            }
            return Ok(Self::Every(ms / 1000));
        }
        if text.starts_with('@') {
            return NAMED
                .iter()
                .find(|name| **name == text)
                .map(|name| Self::Named(name))
                .ok_or_else(|| {
                    invalid(format!(
                        "{text:?} is not a schedule: use @every <duration>, {}, or cron",
                        NAMED.join(", ")
                    ))
                });
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        let fields = match fields.len() {
            5 => std::iter::once("0").chain(fields).collect(),
            6 => fields,
            n => {
                return Err(invalid(format!(
                    "cron has six fields (second minute hour day month weekday) or five \
                     (without seconds), not {n}"
                )));
            }
        };
        let limits: [(&str, u32, u32, &[&str]); 6] = [
            ("second", 0, 59, &[]),
            ("minute", 0, 59, &[]),
            ("hour", 0, 23, &[]),
            ("day of month", 1, 31, &[]),
            ("month", 1, 12, &MONTHS),
            ("day of week", 0, 6, &DAYS),
        ];
        for (field, (what, low, high, names)) in fields.iter().zip(limits) {
            check_field(field, what, low, high, names)?;
        }
        Ok(Self::Cron(fields.join(" ")))
    }

    /// One run at `at_ms`, which must lie ahead of `now_ms` and within the horizon.
    pub fn at(now_ms: u64, at_ms: u64) -> Result<Self, ScheduleError> {
        if at_ms > now_ms.saturating_add(HORIZON_MS) {
            return Err(invalid("a task can be delayed by 366 days at most"));
        }
        Ok(Self::At(at_ms))
    }

    pub fn is_cron(&self) -> bool {
        matches!(self, Self::Cron(_) | Self::Named(_))
    }

    /// The `Nats-Schedule` header value.
    pub fn header(&self) -> String {
        match self {
            Self::At(ms) => format!("@at {}", rfc3339(*ms)),
            Self::Every(seconds) => format!("@every {seconds}s"),
            Self::Named(name) => (*name).to_owned(),
            Self::Cron(fields) => fields.clone(),
        }
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.header())
    }
}

/// Longest schedule name.
pub const NAME_BYTES_MAX: usize = 64;

/// A schedule's name: 1..=64 of `A-Z a-z 0-9 _ -` (a NATS subject token).
pub fn check_name(name: &str) -> Result<(), ScheduleError> {
    if !crate::token::is_word(name, NAME_BYTES_MAX) {
        return Err(invalid(format!(
            "{name:?} is not a schedule name (1..={NAME_BYTES_MAX} of A-Z a-z 0-9 _ -)"
        )));
    }
    Ok(())
}

/// Checks a time zone name's shape (`Europe/Amsterdam`, `UTC`): the server resolves it.
pub fn check_time_zone(zone: &str) -> Result<(), ScheduleError> {
    let shaped = !zone.is_empty()
        && zone.len() <= TIME_ZONE_BYTES_MAX
        && zone.chars().all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))
        && zone.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if !shaped {
        return Err(invalid(format!(
            "{zone:?} is not a time zone name (an IANA name such as Europe/Amsterdam, or UTC)"
        )));
    }
    Ok(())
}

fn check_field(
    field: &str,
    what: &str,
    low: u32,
    high: u32,
    names: &[&str],
) -> Result<(), ScheduleError> {
    let bad = |why: &str| invalid(format!("cron {what} {field:?}: {why} (allowed {low}-{high})"));
    let value = |text: &str| -> Result<u32, ScheduleError> {
        let lower = text.to_ascii_lowercase();
        if let Some(at) = names.iter().position(|name| *name == lower) {
            // Months are 1-based; weekday names count from Sunday = 0.
            return Ok(at as u32 + low);
        }
        let number: u32 = text.parse().map_err(|_| bad("not a number or name"))?;
        if !(low..=high).contains(&number) {
            return Err(bad("out of range"));
        }
        Ok(number)
    };
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (part, None),
        };
        if let Some(step) = step {
            let step: u32 = step.parse().map_err(|_| bad("a step is a number"))?;
            if step == 0 || step > high {
                return Err(bad("a step is 1 up to the field's largest value"));
            }
        }
        if range == "*" || range == "?" {
            continue;
        }
        match range.split_once('-') {
            Some((from, to)) => {
                if value(from)? > value(to)? {
                    return Err(bad("a range goes from low to high"));
                }
            }
            None => {
                value(range)?;
            }
        }
    }
    Ok(())
}

/// Reads `90s`, `10m`, `1h30m`, `2d`, `500ms` (units d, h, m, s, ms; at least one).
pub fn parse_duration_ms(text: &str) -> Result<u64, ScheduleError> {
    let bad = || invalid(format!("{text:?} is not a duration (such as 90s, 10m, 1h30m, 2d)"));
    let mut total: u64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = number.checked_mul(unit).and_then(|ms| total.checked_add(ms)).ok_or_else(bad)?;
    }
    Ok(total)
}

/// `ms` since the epoch as RFC 3339 in UTC, to the second (`2026-12-06T03:00:00Z`).
pub fn rfc3339(ms: u64) -> String {
    let seconds = ms / 1000;
    let (days, day_seconds) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        day_seconds / 3600,
        day_seconds % 3600 / 60,
        day_seconds % 60
    )
}

/// Reads RFC 3339 (`2026-12-06T03:00:00Z`, `...T04:00:00+01:00`, fractions allowed) as ms
/// since the epoch.
pub fn parse_rfc3339(text: &str) -> Result<u64, ScheduleError> {
    let bad = || invalid(format!("{text:?} is not an RFC 3339 time (2026-12-06T03:00:00Z)"));
    let bytes = text.as_bytes();
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return Err(bad());
    }
    let number = |range: std::ops::Range<usize>| -> Result<u64, ScheduleError> {
        let part = text.get(range).ok_or_else(bad)?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    let mut rest = &text[19..];
    let mut fraction_ms = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.find(|c: char| !c.is_ascii_digit()).unwrap_or(fraction.len());
        if digits == 0 {
            return Err(bad());
        }
        let millis = format!("{:0<3}", &fraction[..digits.min(3)]);
        fraction_ms = millis.parse().map_err(|_| bad())?;
        rest = &fraction[digits..];
    }
    let offset_s: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return Err(bad()),
            };
            let zone = &rest[1..];
            if zone.len() != 5 || zone.as_bytes()[2] != b':' {
                return Err(bad());
            }
            let hours: i64 = zone[..2].parse().map_err(|_| bad())?;
            let minutes: i64 = zone[3..].parse().map_err(|_| bad())?;
            if hours > 23 || minutes > 59 {
                return Err(bad());
            }
            sign * (hours * 3600 + minutes * 60)
        }
    };
    if day > days_in_month(year, month) {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day) as i64;
    let seconds = days * 86_400 + (hour * 3600 + minute * 60 + second.min(59)) as i64 - offset_s;
    u64::try_from(seconds).map(|s| s * 1000 + fraction_ms).map_err(|_| bad())
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_index = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recurring_schedules_are_read_and_spelled_for_the_server() {
        let header = |text: &str| Spec::recurring(text).map(|spec| spec.header());
        assert_eq!(header("@every 10m").unwrap(), "@every 600s");
        assert_eq!(header("@every 1h30m").unwrap(), "@every 5400s");
        assert_eq!(header("@daily").unwrap(), "@daily");
        assert_eq!(header("0 3 * * *").unwrap(), "0 0 3 * * *", "five fields: second 0");
        let full = "*/5 0-30/10 8-17 1,15 jan-MAR mon-fri";
        assert_eq!(header(full).unwrap(), full);
        assert_eq!(header("0 0 0 * * sun,sat").unwrap(), "0 0 0 * * sun,sat");
        assert!(Spec::recurring("0 3 * * *").unwrap().is_cron());
        assert!(!Spec::recurring("@every 1s").unwrap().is_cron());
        for bad in [
            "",
            "@every",
            "@every 500ms",
            "@every 0s",
            "@every 1500ms",
            "@every 400d",
            "@every ten",
            "@sometimes",
            "@at 2026-01-01T00:00:00Z",
            "* * * *",
            "* * * * * * *",
            "60 * * * * *",
            "* 60 * * * *",
            "* * 24 * * *",
            "* * * 0 * *",
            "* * * 32 * *",
            "* * * * 13 *",
            "* * * * * 7",
            "* * * * * fun",
            "5-1 * * * * *",
            "*/0 * * * * *",
            "*/x * * * * *",
            "1,,2 * * * * *",
            "-1 * * * * *",
        ] {
            assert!(Spec::recurring(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Spec::recurring(&format!("@every {}s", "1".repeat(200))).is_err());
    }

    #[test]
    fn time_zones_are_names_not_offsets() {
        for good in ["UTC", "Europe/Amsterdam", "America/Argentina/Buenos_Aires", "Etc/GMT+2"] {
            check_time_zone(good).unwrap();
        }
        for bad in ["", "+02:00", "Europe/Amsterdam;rm", "../etc", &"A".repeat(65)] {
            assert!(check_time_zone(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("90s").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration_ms("2d").unwrap(), 172_800_000);
        assert_eq!(parse_duration_ms("250ms").unwrap(), 250);
        for bad in ["", "10", "m", "1x", "1.5h", "-1s", "99999999999999999999d", "1h 2m"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times_round_trip_through_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_526_000_999), "2026-12-06T03:00:00Z");
        for ms in [0, 951_782_400_000, 1_796_526_000_000, 4_102_444_799_000, 86_399_000] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)).unwrap(), ms);
        }
        assert_eq!(parse_rfc3339("2026-12-06T04:00:00+01:00").unwrap(), 1_796_526_000_000);
        assert_eq!(parse_rfc3339("2026-12-06T03:00:00.25Z").unwrap(), 1_796_526_000_250);
        for bad in [
            "",
            "2026-12-06",
            "2026-12-06T03:00:00",
            "2026-13-06T03:00:00Z",
            "2026-02-30T03:00:00Z",
            "2026-12-06T24:00:00Z",
            "2026-12-06T03:00:00+0100",
            "2026-12-06T03:00:00.Z",
            "1969-12-31T23:59:59Z",
            "2026-12-06T03:00:00ZZ",
            "+026-12-06T03:00:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_delay_has_a_horizon() {
        assert_eq!(Spec::at(1_000, 5_000).unwrap().header(), "@at 1970-01-01T00:00:05Z");
        assert!(Spec::at(0, HORIZON_MS + 1).is_err());
    }
}
