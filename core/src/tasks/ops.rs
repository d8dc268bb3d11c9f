//! The operations a task can run, with their input bounds, and how to compute them.
//!
//! An [`Op`] is built only through [`Op::new`], which checks every bound, so a worker never
//! receives an input it cannot handle in bounded time and memory, and a client learns at submit
//! time (`invalid_request`) that an input is too big. Computation ([`Op::execute`]) is pure;
//! `sleep` is the one op whose work is waiting, which the worker does (cancellable), so
//! `execute` only reports its length.
//!
//! Floats are allowed here (averages of measurements are not money); the crate-wide ban on
//! float arithmetic is lifted for this module only.
#![allow(clippy::float_arithmetic)]

use std::cmp::Ordering;
use std::fmt;

/// Most numbers `sum`, `average`, `max`, `min` and `sort` accept.
pub const NUMBERS_MAX: usize = 20_000;
/// Largest magnitude of an integer input: 2^53, so every integer is exact in JSON and f64.
pub const INTEGER_MAGNITUDE_MAX: i64 = 1 << 53;
/// Largest magnitude of a float input (sums of [`NUMBERS_MAX`] of them stay finite).
pub const FLOAT_MAGNITUDE_MAX: f64 = 1e300;
/// Largest `n` for `fibonacci` (fib(100000) has 20,899 decimal digits).
pub const FIBONACCI_N_MAX: u32 = 100_000;
/// Most strings `sort` accepts, and the most bytes of one of them.
pub const STRINGS_MAX: usize = 20_000;
pub const STRING_BYTES_MAX: usize = 1024;
/// Most bytes of text the text ops accept (case mapping can triple it, still under 1 MiB).
pub const TEXT_BYTES_MAX: usize = 64 * 1024;
/// Longest `sleep`, in milliseconds (one hour).
pub const SLEEP_MS_MAX: u64 = 3_600_000;
/// Most bytes of a `fail` message.
pub const FAIL_MESSAGE_BYTES_MAX: usize = 512;
/// Inputs up to this many items (or bytes of text, or this `n`) count as quick.
const QUICK_ITEMS_MAX: usize = 1_000;

/// A number as given: an exact integer or a finite float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    fn as_f64(self) -> f64 {
        match self {
            // Exact: integers are bounded by 2^53.
            #[allow(clippy::cast_precision_loss)]
            Self::Int(i) => i as f64,
            Self::Float(f) => f,
        }
    }

    fn total_cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Int(a), Self::Int(b)) => a.cmp(b),
            _ => self.as_f64().total_cmp(&other.as_f64()),
        }
    }
}

/// What `sort` sorts.
#[derive(Debug, Clone, PartialEq)]
pub enum SortItems {
    Numbers(Vec<Number>),
    Strings(Vec<String>),
}

/// A validated operation with its arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Sum(Vec<Number>),
    Average(Vec<Number>),
    Max(Vec<Number>),
    Min(Vec<Number>),
    /// The n-th Fibonacci number, exact (fib(0) = 0, fib(1) = 1).
    Fibonacci(u32),
    Sort {
        items: SortItems,
        descending: bool,
    },
    CountWords(String),
    CountChars(String),
    Uppercase(String),
    Lowercase(String),
    /// Wait this many milliseconds (done by the worker, with progress and cancellation).
    Sleep(u64),
    /// Always fails with this message: exercises retries and dead-lettering.
    Fail(String),
}

/// The names of every op, as clients spell them.
pub const OP_NAMES: [&str; 12] = [
    "sum",
    "average",
    "max",
    "min",
    "fibonacci",
    "sort",
    "count_words",
    "count_chars",
    "uppercase",
    "lowercase",
    "sleep",
    "fail",
];

/// Unvalidated arguments, as decoded from the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum RawArgs {
    Numbers(Vec<Number>),
    N(u64),
    Sort { items: SortItems, descending: bool },
    Text(String),
    Ms(u64),
    Message(String),
}

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OpError(pub String);

fn refuse(message: impl Into<String>) -> OpError {
    OpError(message.into())
}

/// The result of an op.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// An exact integer (sums of integers, counts, max/min of integers).
    Int(i128),
    /// A float (averages, sums involving floats).
    Float(f64),
    /// An arbitrary-precision integer as decimal digits (fibonacci).
    BigInt(String),
    Numbers(Vec<Number>),
    Strings(Vec<String>),
    Text(String),
    /// `sleep` slept this long.
    Slept(u64),
}

impl Op {
    /// Checks `args` against the bounds of `op` and builds the op.
    pub fn new(op: &str, args: RawArgs) -> Result<Self, OpError> {
        match (op, args) {
            ("sum" | "average" | "max" | "min", RawArgs::Numbers(numbers)) => {
                check_numbers(op, &numbers)?;
                // The sum of nothing is 0; an average, a maximum or a minimum of nothing
                // does not exist, so such a task could never succeed: refuse it now rather
                // than retry it into a dead letter.
                if numbers.is_empty() && op != "sum" {
                    return Err(refuse(format!("{op}: give at least one number")));
                }
                Ok(match op {
                    "sum" => Self::Sum(numbers),
                    "average" => Self::Average(numbers),
                    "max" => Self::Max(numbers),
                    _ => Self::Min(numbers),
                })
            }
            ("fibonacci", RawArgs::N(n)) => match u32::try_from(n) {
                Ok(n) if n <= FIBONACCI_N_MAX => Ok(Self::Fibonacci(n)),
                _ => Err(refuse(format!("fibonacci: n is {n}; the largest is {FIBONACCI_N_MAX}"))),
            },
            ("sort", RawArgs::Sort { items, descending }) => {
                match &items {
                    SortItems::Numbers(numbers) => check_numbers(op, numbers)?,
                    SortItems::Strings(strings) => {
                        if strings.len() > STRINGS_MAX {
                            return Err(refuse(format!(
                                "sort: {} strings; the limit is {STRINGS_MAX}",
                                strings.len()
                            )));
                        }
                        if let Some(long) = strings.iter().find(|s| s.len() > STRING_BYTES_MAX) {
                            return Err(refuse(format!(
                                "sort: a string of {} bytes; the limit is {STRING_BYTES_MAX}",
                                long.len()
                            )));
                        }
                    }
                }
                Ok(Self::Sort { items, descending })
            }
            ("count_words" | "count_chars" | "uppercase" | "lowercase", RawArgs::Text(text)) => {
                if text.len() > TEXT_BYTES_MAX {
                    return Err(refuse(format!(
                        "{op}: text is {} bytes; the limit is {TEXT_BYTES_MAX}",
                        text.len()
                    )));
                }
                Ok(match op {
                    "count_words" => Self::CountWords(text),
                    "count_chars" => Self::CountChars(text),
                    "uppercase" => Self::Uppercase(text),
                    _ => Self::Lowercase(text),
                })
            }
            ("sleep", RawArgs::Ms(ms)) => {
                if ms > SLEEP_MS_MAX {
                    return Err(refuse(format!("sleep: {ms} ms; the longest is {SLEEP_MS_MAX}")));
                }
                Ok(Self::Sleep(ms))
            }
            ("fail", RawArgs::Message(message)) => {
                if message.len() > FAIL_MESSAGE_BYTES_MAX {
                    return Err(refuse(format!(
                        "fail: message is {} bytes; the limit is {FAIL_MESSAGE_BYTES_MAX}",
                        message.len()
                    )));
                }
                Ok(Self::Fail(message))
            }
            (op, _) if OP_NAMES.contains(&op) => {
                Err(refuse(format!("{op}: wrong arguments; expected {}", Self::usage(op))))
            }
            (op, _) => Err(refuse(format!("unknown op {op:?}; ops are {}", OP_NAMES.join(", ")))),
        }
    }

    /// The argument shape of an op, for error messages.
    pub fn usage(op: &str) -> &'static str {
        match op {
            "sum" | "average" | "max" | "min" => r#"{"numbers":[1,2.5,...]}"#,
            "fibonacci" => r#"{"n":90}"#,
            "sort" => r#"{"numbers":[...]} or {"strings":[...]}, optional "descending":true"#,
            "count_words" | "count_chars" | "uppercase" | "lowercase" => r#"{"text":"..."}"#,
            "sleep" => r#"{"ms":1000}"#,
            "fail" => r#"{"message":"..."} (message optional)"#,
            _ => "one of the documented ops",
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Sum(_) => "sum",
            Self::Average(_) => "average",
            Self::Max(_) => "max",
            Self::Min(_) => "min",
            Self::Fibonacci(_) => "fibonacci",
            Self::Sort { .. } => "sort",
            Self::CountWords(_) => "count_words",
            Self::CountChars(_) => "count_chars",
            Self::Uppercase(_) => "uppercase",
            Self::Lowercase(_) => "lowercase",
            Self::Sleep(_) => "sleep",
            Self::Fail(_) => "fail",
        }
    }

    /// Small enough to compute on an I/O thread (microseconds); others go to a blocking pool.
    pub fn is_quick(&self) -> bool {
        match self {
            Self::Sum(v) | Self::Average(v) | Self::Max(v) | Self::Min(v) => {
                v.len() <= QUICK_ITEMS_MAX
            }
            Self::Fibonacci(n) => (*n as usize) <= QUICK_ITEMS_MAX,
            Self::Sort { items: SortItems::Numbers(v), .. } => v.len() <= QUICK_ITEMS_MAX,
            Self::Sort { items: SortItems::Strings(v), .. } => v.len() <= QUICK_ITEMS_MAX,
            Self::CountWords(t) | Self::CountChars(t) | Self::Uppercase(t) | Self::Lowercase(t) => {
                t.len() <= QUICK_ITEMS_MAX
            }
            Self::Sleep(_) => false,
            Self::Fail(_) => true,
        }
    }

    /// Computes the op. `Err` is the task's failure message (only `fail` fails: every other
    /// input was bounded by [`Op::new`] so that it cannot overflow).
    pub fn execute(&self) -> Result<Output, String> {
        Ok(match self {
            Self::Sum(numbers) => sum(numbers),
            Self::Average(numbers) => {
                if numbers.is_empty() {
                    return Err("average of no numbers".to_owned());
                }
                #[allow(clippy::cast_precision_loss)]
                let count = numbers.len() as f64;
                match sum(numbers) {
                    #[allow(clippy::cast_precision_loss)]
                    Output::Int(total) => Output::Float(total as f64 / count),
                    Output::Float(total) => Output::Float(total / count),
                    _ => unreachable!("sum yields a number"),
                }
            }
            Self::Max(numbers) | Self::Min(numbers) => {
                let pick = if matches!(self, Self::Max(_)) {
                    numbers.iter().max_by(|a, b| a.total_cmp(b))
                } else {
                    numbers.iter().min_by(|a, b| a.total_cmp(b))
                };
                match pick {
                    Some(Number::Int(i)) => Output::Int(i128::from(*i)),
                    Some(Number::Float(f)) => Output::Float(*f),
                    None => return Err(format!("{} of no numbers", self.name())),
                }
            }
            Self::Fibonacci(n) => Output::BigInt(fibonacci(*n)),
            Self::Sort { items: SortItems::Numbers(numbers), descending } => {
                let mut sorted = numbers.clone();
                sorted.sort_by(|a, b| a.total_cmp(b));
                if *descending {
                    sorted.reverse();
                }
                Output::Numbers(sorted)
            }
            Self::Sort { items: SortItems::Strings(strings), descending } => {
                let mut sorted = strings.clone();
                sorted.sort();
                if *descending {
                    sorted.reverse();
                }
                Output::Strings(sorted)
            }
            Self::CountWords(text) => Output::Int(text.split_whitespace().count() as i128),
            Self::CountChars(text) => Output::Int(text.chars().count() as i128),
            Self::Uppercase(text) => Output::Text(text.to_uppercase()),
            Self::Lowercase(text) => Output::Text(text.to_lowercase()),
            Self::Sleep(ms) => Output::Slept(*ms),
            Self::Fail(message) => {
                return Err(if message.is_empty() {
                    "failed as asked".to_owned()
                } else {
                    message.clone()
                });
            }
        })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn check_numbers(op: &str, numbers: &[Number]) -> Result<(), OpError> {
    if numbers.len() > NUMBERS_MAX {
        return Err(refuse(format!("{op}: {} numbers; the limit is {NUMBERS_MAX}", numbers.len())));
    }
    for number in numbers {
        match *number {
            Number::Int(i) if i.unsigned_abs() > INTEGER_MAGNITUDE_MAX.unsigned_abs() => {
                return Err(refuse(format!(
                    "{op}: {i} is out of range; integers must be within ±2^53"
                )));
            }
            Number::Float(f) if !f.is_finite() || f.abs() > FLOAT_MAGNITUDE_MAX => {
                return Err(refuse(format!(
                    "{op}: {f} is out of range; floats must be finite and within ±1e300"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Exact for integers (i128 cannot overflow under the bounds); a float once any input is one.
fn sum(numbers: &[Number]) -> Output {
    if numbers.iter().all(|n| matches!(n, Number::Int(_))) {
        let total = numbers
            .iter()
            .map(|n| match n {
                Number::Int(i) => i128::from(*i),
                Number::Float(_) => 0,
            })
            .sum();
        Output::Int(total)
    } else {
        Output::Float(numbers.iter().map(|n| n.as_f64()).sum())
    }
}

/// fib(n) by fast doubling, as decimal digits.
fn fibonacci(n: u32) -> String {
    use num_bigint::BigUint;
    // (fib(k), fib(k+1)) for k = the bits of n read from the top.
    let mut a = BigUint::from(0u32);
    let mut b = BigUint::from(1u32);
    for bit in (0..u32::BITS - n.leading_zeros()).rev() {
        // fib(2k) = fib(k) * (2 fib(k+1) - fib(k)); fib(2k+1) = fib(k)^2 + fib(k+1)^2
        let two_b_minus_a = (&b << 1u32) - &a;
        let c = &a * &two_b_minus_a;
        let d = &a * &a + &b * &b;
        if (n >> bit) & 1 == 0 {
            (a, b) = (c, d);
        } else {
            b = &c + &d;
            a = d;
        }
    }
    a.to_str_radix(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(values: &[i64]) -> Vec<Number> {
        values.iter().map(|&i| Number::Int(i)).collect()
    }

    #[test]
    fn number_ops_are_exact_for_integers_and_float_otherwise() {
        let op = |name, numbers| Op::new(name, RawArgs::Numbers(numbers)).unwrap().execute();
        assert_eq!(op("sum", ints(&[1, 2, 3])), Ok(Output::Int(6)));
        assert_eq!(op("sum", ints(&[])), Ok(Output::Int(0)));
        let big = INTEGER_MAGNITUDE_MAX;
        assert_eq!(op("sum", ints(&[big, big, big])), Ok(Output::Int(3 * i128::from(big))));
        assert_eq!(op("sum", vec![Number::Int(1), Number::Float(0.5)]), Ok(Output::Float(1.5)));
        assert_eq!(op("average", ints(&[1, 2])), Ok(Output::Float(1.5)));
        for name in ["average", "max", "min"] {
            let refused = Op::new(name, RawArgs::Numbers(Vec::new())).unwrap_err();
            assert!(refused.0.contains("at least one number"), "{name}: {refused}");
            // Built by hand, bypassing `new`, it still fails rather than panics.
            let op = match name {
                "average" => Op::Average(Vec::new()),
                "max" => Op::Max(Vec::new()),
                _ => Op::Min(Vec::new()),
            };
            assert!(op.execute().unwrap_err().contains("no numbers"));
        }
        assert_eq!(op("max", vec![Number::Int(3), Number::Float(3.5)]), Ok(Output::Float(3.5)));
        assert_eq!(op("min", ints(&[3, -7, 2])), Ok(Output::Int(-7)));
    }

    #[test]
    fn bounds_are_refused_with_the_limit_named() {
        let too_many = vec![Number::Int(1); NUMBERS_MAX + 1];
        assert!(Op::new("sum", RawArgs::Numbers(too_many)).unwrap_err().0.contains("20000"));
        let huge = vec![Number::Int(INTEGER_MAGNITUDE_MAX + 1)];
        assert!(Op::new("sum", RawArgs::Numbers(huge)).unwrap_err().0.contains("2^53"));
        for bad in [f64::NAN, f64::INFINITY, 1e301] {
            assert!(Op::new("min", RawArgs::Numbers(vec![Number::Float(bad)])).is_err());
        }
        assert!(Op::new("fibonacci", RawArgs::N(u64::from(FIBONACCI_N_MAX) + 1)).is_err());
        assert!(Op::new("fibonacci", RawArgs::N(u64::MAX)).is_err());
        assert!(Op::new("sleep", RawArgs::Ms(SLEEP_MS_MAX + 1)).is_err());
        let text = "x".repeat(TEXT_BYTES_MAX + 1);
        assert!(Op::new("uppercase", RawArgs::Text(text)).is_err());
        let long = vec!["y".repeat(STRING_BYTES_MAX + 1)];
        let items = SortItems::Strings(long);
        assert!(Op::new("sort", RawArgs::Sort { items, descending: false }).is_err());
        let many = SortItems::Strings(vec![String::new(); STRINGS_MAX + 1]);
        assert!(Op::new("sort", RawArgs::Sort { items: many, descending: false }).is_err());
        assert!(Op::new("fail", RawArgs::Message("m".repeat(513))).is_err());
    }

    #[test]
    fn wrong_arguments_and_unknown_ops_are_refused() {
        let error = Op::new("sum", RawArgs::Text("1 2".into())).unwrap_err();
        assert!(error.0.contains("numbers"), "{error}");
        let error = Op::new("divide", RawArgs::N(1)).unwrap_err();
        assert!(error.0.contains("unknown op") && error.0.contains("fibonacci"), "{error}");
    }

    #[test]
    fn fibonacci_is_exact() {
        let fib = |n| fibonacci(n);
        assert_eq!(fib(0), "0");
        assert_eq!(fib(1), "1");
        assert_eq!(fib(2), "1");
        assert_eq!(fib(10), "55");
        assert_eq!(fib(90), "2880067194370816120");
        assert_eq!(fib(100), "354224848179261915075");
        // Cross-check the fast doubling against plain iteration.
        let (mut a, mut b) = (num_bigint::BigUint::from(0u32), num_bigint::BigUint::from(1u32));
        for n in 0..300 {
            assert_eq!(fib(n), a.to_str_radix(10));
            (a, b) = (b.clone(), a + b);
        }
        assert_eq!(fib(FIBONACCI_N_MAX).len(), 20_899);
    }

    #[test]
    fn sort_and_text_ops() {
        let items = SortItems::Numbers(vec![Number::Int(3), Number::Float(-1.5), Number::Int(2)]);
        let op = Op::new("sort", RawArgs::Sort { items, descending: false }).unwrap();
        let sorted = vec![Number::Float(-1.5), Number::Int(2), Number::Int(3)];
        assert_eq!(op.execute(), Ok(Output::Numbers(sorted)));
        let items = SortItems::Strings(vec!["b".into(), "a".into(), "c".into()]);
        let op = Op::new("sort", RawArgs::Sort { items, descending: true }).unwrap();
        assert_eq!(op.execute(), Ok(Output::Strings(vec!["c".into(), "b".into(), "a".into()])));
        let text = |name: &str, t: &str| Op::new(name, RawArgs::Text(t.into())).unwrap().execute();
        assert_eq!(text("count_words", "  hello  big\tworld\n"), Ok(Output::Int(3)));
        assert_eq!(text("count_chars", "héllo"), Ok(Output::Int(5)));
        assert_eq!(text("uppercase", "straße"), Ok(Output::Text("STRASSE".into())));
        assert_eq!(text("lowercase", "ÀB"), Ok(Output::Text("àb".into())));
        assert_eq!(Op::new("sleep", RawArgs::Ms(5)).unwrap().execute(), Ok(Output::Slept(5)));
        let fail = Op::new("fail", RawArgs::Message(String::new())).unwrap();
        assert_eq!(fail.execute(), Err("failed as asked".into()));
    }

    #[test]
    fn quickness_follows_input_size() {
        assert!(Op::new("sum", RawArgs::Numbers(ints(&[1, 2]))).unwrap().is_quick());
        let many = vec![Number::Int(1); QUICK_ITEMS_MAX + 1];
        assert!(!Op::new("sum", RawArgs::Numbers(many)).unwrap().is_quick());
        assert!(!Op::new("sleep", RawArgs::Ms(0)).unwrap().is_quick());
        assert!(!Op::new("fibonacci", RawArgs::N(50_000)).unwrap().is_quick());
    }
}
