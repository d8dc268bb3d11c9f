//! `agora task ...`: submit, follow, list and cancel tasks; list live workers.

use std::time::Duration;

use agora_nats::AgoraClient;
use agora_nats::subjects::tasks as subject;
use agora_nats::tasks::wire::{
    ListRequest, SchedulePutRequest, ScheduleView, SubmitRequest, TaskEventWire, TaskView,
};
use clap::Subcommand;
use futures::StreamExt;
use serde_json::json;
use serde_json::value::RawValue;

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a task: `agora task submit sum 1 2 3`, `fibonacci 90`, `sort b a c`,
    /// `count_words some text`, `sleep 2000`, or any op with `--args '{...}'`.
    Submit {
        /// sum, average, max, min, fibonacci, sort, count_words, count_chars, uppercase,
        /// lowercase, sleep, fail.
        op: String,
        /// The op's arguments as words (numbers, a count, text...).
        words: Vec<String>,
        /// The arguments as JSON instead of words.
        #[arg(long, conflicts_with = "words")]
        args: Option<String>,
        /// Client id: submitting the same id again returns the same task.
        #[arg(long)]
        id: Option<String>,
        /// Run before normal tasks.
        #[arg(long)]
        high: bool,
        /// sort: largest first.
        #[arg(long)]
        descending: bool,
        /// Wait for the result, with a progress bar.
        #[arg(long)]
        wait: bool,
        /// Run it at this time (RFC 3339: 2026-12-24T18:00:00Z or with an offset).
        #[arg(long, conflicts_with = "delay")]
        at: Option<String>,
        /// Run it this long from now (90s, 10m, 1h30m, 2d).
        #[arg(long = "in", value_name = "DURATION")]
        delay: Option<String>,
        /// Keep the finished task and its result this long (1h, 7d; default: the service's).
        #[arg(long, value_name = "DURATION")]
        keep: Option<String>,
    },
    /// Run a task on a recurring schedule (the NATS server's scheduler runs it):
    /// `agora task schedule nightly --cron "0 3 * * *" --tz Europe/Amsterdam sum 1 2`,
    /// `agora task schedule ping --every 10m sleep 100`. Putting a name again replaces it.
    Schedule {
        /// The schedule's name (A-Z a-z 0-9 _ -), yours alone.
        name: String,
        op: String,
        words: Vec<String>,
        /// Cron: five fields (minute hour day month weekday) or six, seconds first.
        #[arg(long, conflicts_with = "every", required_unless_present = "every")]
        cron: Option<String>,
        /// A fixed interval: 90s, 10m, 1h...
        #[arg(long)]
        every: Option<String>,
        /// The cron schedule's time zone (IANA, e.g. Europe/Amsterdam; default UTC).
        #[arg(long)]
        tz: Option<String>,
        #[arg(long, conflicts_with = "words")]
        args: Option<String>,
        #[arg(long)]
        high: bool,
        #[arg(long)]
        descending: bool,
        /// Create it paused.
        #[arg(long)]
        paused: bool,
    },
    /// List your recurring schedules (a manager: everyone's, or `--owner`'s).
    Schedules {
        #[arg(long)]
        owner: Option<String>,
    },
    /// Pause a recurring schedule (it keeps its definition and runs nothing).
    Pause {
        name: String,
        #[arg(long)]
        owner: Option<String>,
    },
    /// Resume a paused schedule.
    Resume {
        name: String,
        #[arg(long)]
        owner: Option<String>,
    },
    /// Delete a recurring schedule.
    Unschedule {
        name: String,
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show a task with its history.
    Get { id: String },
    /// List tasks, newest first.
    List {
        /// queued, running, completed, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        op: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only tasks older than this id (paging).
        #[arg(long)]
        before: Option<String>,
        /// Only dead letters (tasks that failed every attempt).
        #[arg(long)]
        dead_letter: bool,
    },
    /// Cancel a task: a queued one never runs, a running one stops.
    Cancel { id: String },
    /// Wait for a task to finish.
    Wait {
        id: String,
        /// How long to wait for the task to finish (not `--timeout-ms`, which is how long to
        /// wait for a reply).
        #[arg(long, default_value_t = 60_000)]
        wait_ms: u64,
    },
    /// Print task events as they happen (every task, or one).
    Watch { id: Option<String> },
    /// List live workers with their counters and current tasks (managers and the operator).
    Workers,
}

/// Builds an op's JSON arguments from command-line words. Numbers go out as they were typed
/// (not through an `f64`), so the task service judges exactly what the user wrote.
fn args_from_words(op: &str, words: &[String], descending: bool) -> anyhow::Result<Box<RawValue>> {
    let numbers = || -> anyhow::Result<String> {
        for word in words {
            let number = word.starts_with(|c: char| c == '-' || c.is_ascii_digit())
                && serde_json::from_str::<&RawValue>(word).is_ok();
            anyhow::ensure!(number, "{word:?} is not a number");
        }
        Ok(format!("[{}]", words.join(",")))
    };
    let one_integer = || -> anyhow::Result<u64> {
        match words {
            [word] => word.parse().map_err(|_| anyhow::anyhow!("{word:?} is not a whole number")),
            _ => anyhow::bail!("{op} takes one whole number"),
        }
    };
    let text = match op {
        "sum" | "average" | "max" | "min" => format!(r#"{{"numbers":{}}}"#, numbers()?),
        "fibonacci" => json!({ "n": one_integer()? }).to_string(),
        "sleep" => json!({ "ms": one_integer()? }).to_string(),
        "sort" => match numbers() {
            Ok(numbers) => format!(r#"{{"numbers":{numbers},"descending":{descending}}}"#),
            Err(_) => json!({ "strings": words, "descending": descending }).to_string(),
        },
        "count_words" | "count_chars" | "uppercase" | "lowercase" => {
            json!({ "text": words.join(" ") }).to_string()
        }
        "fail" => json!({ "message": words.join(" ") }).to_string(),
        // Unknown ops go to the service, which names the valid ones.
        _ => "{}".to_owned(),
    };
    Ok(RawValue::from_string(text)?)
}

pub async fn run(client: &AgoraClient, command: TaskCommand, json: bool) -> anyhow::Result<()> {
    match command {
        TaskCommand::Submit { op, words, args, id, high, descending, wait, at, delay, keep } => {
            let args = op_args(&op, args, &words, descending)?;
            let run_at_ms = at
                .map(|at| agora_core::tasks::schedule::parse_rfc3339(&at))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--at: {e}"))?;
            let delay_ms = delay
                .map(|delay| agora_core::tasks::schedule::parse_duration_ms(&delay))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--in: {e}"))?;
            let request = SubmitRequest {
                op,
                args,
                id,
                priority: high.then(|| "high".to_owned()),
                wait_ms: None,
                run_at_ms,
                delay_ms,
                ttl_ms: keep
                    .map(|keep| agora_core::tasks::schedule::parse_duration_ms(&keep))
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--keep: {e}"))?,
            };
            // Subscribe first, so no progress event is missed while waiting.
            let mut events = if wait {
                Some(client.nats().subscribe(events_filter(client, None).await?).await?)
            } else {
                None
            };
            let delayed = request.run_at_ms.is_some() || request.delay_ms.is_some();
            let task = client.submit(&request).await?;
            match events.as_mut() {
                // A delayed task: when it runs (the reply says only that it is queued).
                None if delayed && !json => print_task(&client.task(&task.id).await?, json, false),
                None => print_task(&task, json, false),
                Some(events) => {
                    let done = follow(client, &task.id, events, json).await?;
                    print_task(&done, json, false);
                    if done.state != "completed" {
                        anyhow::bail!("task {} {}", done.id, done.state);
                    }
                }
            }
        }
        TaskCommand::Schedule {
            name,
            op,
            words,
            cron,
            every,
            tz,
            args,
            high,
            descending,
            paused,
        } => {
            let args = op_args(&op, args, &words, descending)?;
            let schedule = match (cron, every) {
                (Some(cron), _) => cron,
                (None, Some(every)) => format!("@every {every}"),
                (None, None) => anyhow::bail!("give --cron or --every"),
            };
            let request = SchedulePutRequest {
                name,
                schedule,
                time_zone: tz,
                op,
                args,
                priority: high.then(|| "high".to_owned()),
                paused,
            };
            print_schedules(&[client.put_schedule(&request).await?], json);
        }
        TaskCommand::Schedules { owner } => {
            print_schedules(&client.schedules(owner).await?.schedules, json);
        }
        TaskCommand::Pause { name, owner } => {
            let view = client.schedule_action(subject::SCHEDULE_PAUSE, &name, owner).await?;
            print_schedules(&[view], json);
        }
        TaskCommand::Resume { name, owner } => {
            let view = client.schedule_action(subject::SCHEDULE_RESUME, &name, owner).await?;
            print_schedules(&[view], json);
        }
        TaskCommand::Unschedule { name, owner } => {
            let view = client.schedule_action(subject::SCHEDULE_DELETE, &name, owner).await?;
            if json {
                println!("{}", serde_json::to_string(&view)?);
            } else {
                println!("schedule {} deleted after {} runs", view.name, view.runs);
            }
        }
        TaskCommand::Get { id } => print_task(&client.task(&id).await?, json, true),
        TaskCommand::List { state, op, limit, before, dead_letter } => {
            let reply = client
                .tasks(&ListRequest { state, op, limit: Some(limit), before, dead_letter })
                .await?;
            if json {
                println!("{}", serde_json::to_string(&reply)?);
            } else if reply.tasks.is_empty() {
                println!("no tasks");
            } else {
                println!(
                    "{:>10}  {:<11} {:<10} {:>8}  {:<20} error",
                    "id", "op", "state", "attempts", "worker"
                );
                for task in &reply.tasks {
                    println!(
                        "{:>10}  {:<11} {:<10} {:>8}  {:<20} {}",
                        task.id,
                        task.op.as_deref().unwrap_or("-"),
                        task.state,
                        task.attempts.unwrap_or(0),
                        task.worker.as_deref().unwrap_or("-"),
                        task.error.as_deref().unwrap_or("")
                    );
                }
                if let Some(next) = reply.next_before {
                    println!("more: --before {next}");
                }
            }
        }
        TaskCommand::Cancel { id } => print_task(&client.cancel_task(&id).await?, json, false),
        TaskCommand::Wait { id, wait_ms } => {
            print_task(&client.wait_task(&id, wait_ms).await?, json, false)
        }
        TaskCommand::Watch { id } => {
            let filter = events_filter(client, id.as_deref()).await?;
            let mut events = client.nats().subscribe(filter).await?;
            while let Some(message) = events.next().await {
                if json {
                    println!("{}", String::from_utf8_lossy(&message.payload));
                } else if let Ok(event) = serde_json::from_slice::<TaskEventWire>(&message.payload)
                {
                    println!("{}", describe(&event));
                }
            }
        }
        TaskCommand::Workers => {
            let workers = client.workers(Duration::from_millis(500)).await?;
            if json {
                println!("{}", serde_json::to_string(&workers)?);
            } else if workers.is_empty() {
                println!("no live workers");
            } else {
                println!(
                    "{:<24} {:>5} {:>8} {:>7} {:>8}  current",
                    "worker", "slots", "done", "failed", "dropped"
                );
                for w in workers {
                    println!(
                        "{:<24} {:>5} {:>8} {:>7} {:>8}  {}",
                        w.worker,
                        w.concurrency,
                        w.done,
                        w.failed,
                        w.dropped,
                        w.current.join(",")
                    );
                }
            }
        }
    }
    Ok(())
}

/// An op's arguments: `--args` JSON, or built from words.
fn op_args(
    op: &str,
    args: Option<String>,
    words: &[String],
    descending: bool,
) -> anyhow::Result<Box<RawValue>> {
    match args {
        Some(text) => {
            RawValue::from_string(text).map_err(|e| anyhow::anyhow!("--args is not JSON: {e}"))
        }
        None => args_from_words(op, words, descending),
    }
}

fn print_schedules(schedules: &[ScheduleView], json: bool) {
    if json {
        for schedule in schedules {
            println!("{}", serde_json::to_string(schedule).unwrap_or_default());
        }
        return;
    }
    if schedules.is_empty() {
        println!("no schedules");
        return;
    }
    let time = |ms: Option<u64>| ms.map_or("-".to_owned(), agora_core::tasks::schedule::rfc3339);
    let shown: Vec<String> = schedules
        .iter()
        .map(|s| match &s.time_zone {
            Some(zone) => format!("{} {zone}", s.schedule),
            None => s.schedule.clone(),
        })
        .collect();
    // The schedule column is as wide as its widest (a cron with a time zone runs long).
    let width = shown.iter().map(String::len).max().unwrap_or(0).max(22);
    println!(
        "{:<12} {:<20} {:<width$} {:<11} {:<7} {:>5}  {:<20}  {:<20}  last task",
        "owner", "name", "schedule", "op", "state", "runs", "last run", "next run"
    );
    for (s, schedule) in schedules.iter().zip(&shown) {
        println!(
            "{:<12} {:<20} {:<width$} {:<11} {:<7} {:>5}  {:<20}  {:<20}  {}",
            s.owner,
            s.name,
            schedule,
            s.op,
            if s.paused { "paused" } else { "active" },
            s.runs,
            time(s.last_run_ms),
            time(s.next_run_ms),
            s.last_task.as_deref().unwrap_or("-")
        );
    }
}

/// Shows a progress bar fed by the task's events until it finishes; returns the task.
async fn follow(
    client: &AgoraClient,
    id: &str,
    events: &mut async_nats::Subscriber,
    json: bool,
) -> anyhow::Result<TaskView> {
    let bar =
        if json { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(100) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("task {msg:<22} [{bar:30}] {pos:>3}%")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("{id} queued"));
    let suffix = format!(".{id}");
    let waiting = client.wait_task(id, agora_nats::tasks::WAIT_MS_MAX);
    tokio::pin!(waiting);
    loop {
        tokio::select! {
            done = &mut waiting => {
                let done = done?;
                if done.state == "queued" || done.state == "running" {
                    waiting.set(client.wait_task(id, agora_nats::tasks::WAIT_MS_MAX));
                    continue;
                }
                bar.set_position(u64::from(done.progress.unwrap_or(0)));
                bar.finish_with_message(format!("{id} {}", done.state));
                return Ok(done);
            }
            Some(message) = events.next() => {
                if !message.subject.as_str().ends_with(&suffix) {
                    continue;
                }
                if let Ok(event) = serde_json::from_slice::<TaskEventWire>(&message.payload) {
                    if let Some(percent) = event.percent {
                        bar.set_position(u64::from(percent));
                    }
                    bar.set_message(format!("{id} {}", event.event));
                }
            }
        }
    }
}

/// The task events this connection may watch: a user's own (`agora.tasks.events.<me>.*`),
/// or every task's for a server without users; of task `id` only, when given.
pub async fn events_filter(client: &AgoraClient, id: Option<&str>) -> anyhow::Result<String> {
    // No auth service: a server without users, where every task's events may be watched.
    let name = match client.whoami().await {
        Ok(me) => me.name,
        Err(agora_nats::ClientError::NoResponders(_)) => None,
        Err(error) => return Err(error.into()),
    };
    Ok(match (name, id) {
        (Some(name), Some(id)) => subject::events(&name, id),
        (Some(name), None) => subject::events_of(&name),
        (None, Some(id)) => subject::events("*", id),
        (None, None) => subject::EVENTS_ALL.to_owned(),
    })
}

fn describe(event: &TaskEventWire) -> String {
    let mut line = format!("{} {:<10}", event.id.as_deref().unwrap_or("?"), event.event);
    if let Some(attempt) = event.attempt {
        line.push_str(&format!(" attempt={attempt}"));
    }
    if let Some(worker) = &event.worker {
        line.push_str(&format!(" worker={worker}"));
    }
    if let Some(percent) = event.percent {
        line.push_str(&format!(" {percent}%"));
    }
    if let Some(error) = &event.error {
        line.push_str(&format!(" error={error:?}"));
    }
    if let Some(retry) = event.retry_in_ms {
        line.push_str(&format!(" retry_in={retry}ms"));
    }
    if event.dead_letter {
        line.push_str(" dead-letter");
    }
    if let Some(result) = &event.result {
        line.push_str(&format!(" result={}", result.get()));
    }
    line
}

fn print_task(task: &TaskView, json: bool, history: bool) {
    if json {
        println!("{}", serde_json::to_string(task).unwrap_or_default());
        return;
    }
    let mut line = format!("task {} {}", task.id, task.state);
    if let Some(op) = &task.op {
        line.push_str(&format!(" op={op}"));
    }
    if let Some(attempts) = task.attempts {
        line.push_str(&format!(" attempts={attempts}"));
    }
    if let Some(worker) = &task.worker {
        line.push_str(&format!(" worker={worker}"));
    }
    if let (Some(start), Some(end)) = (task.started_ms, task.finished_ms) {
        line.push_str(&format!(" ran={}ms", end.saturating_sub(start)));
    }
    if task.dead_letter {
        line.push_str(" dead-letter");
    }
    if let Some(at) = task.run_at_ms {
        let when = agora_core::tasks::schedule::rfc3339(at);
        line.push_str(&format!(" {}={when}", if task.held { "runs_at" } else { "ran_at" }));
    }
    if let Some(schedule) = &task.schedule {
        line.push_str(&format!(" schedule={schedule}"));
    }
    println!("{line}");
    if let Some(args) = &task.args {
        println!("  args:   {}", args.get());
    }
    if let Some(result) = &task.result {
        println!("  result: {}", result.get());
    }
    if let Some(error) = &task.error {
        println!("  error:  {error}");
    }
    if history && let Some(events) = &task.history {
        for event in events {
            println!(
                "  {}  {}",
                crate::utc(event.at_ms),
                describe(event).split_once(' ').map_or("", |(_, rest)| rest)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_become_args() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let args = |op, w: &[&str], descending| {
            args_from_words(op, &words(w), descending).map(|raw| raw.get().to_owned())
        };
        assert_eq!(args("sum", &["1", "2.5"], false).unwrap(), r#"{"numbers":[1,2.5]}"#);
        // Typed numbers go out as typed: the service, not an f64 here, judges 2^64.
        assert_eq!(
            args("sum", &["18446744073709551616", "-0.5e3"], false).unwrap(),
            r#"{"numbers":[18446744073709551616,-0.5e3]}"#
        );
        for bad in ["x", "1,2", "[1]", "NaN", "1 2", "{}", "\"1\""] {
            assert!(args("sum", &[bad], false).is_err(), "{bad}");
        }
        assert_eq!(args("fibonacci", &["90"], false).unwrap(), r#"{"n":90}"#);
        assert!(args("sleep", &["1", "2"], false).is_err());
        assert_eq!(
            args("sort", &["b", "a"], true).unwrap(),
            json!({"strings": ["b", "a"], "descending": true}).to_string()
        );
        assert_eq!(
            args("sort", &["2", "1"], false).unwrap(),
            r#"{"numbers":[2,1],"descending":false}"#
        );
        assert_eq!(args("uppercase", &["a", "b"], false).unwrap(), r#"{"text":"a b"}"#);
    }
}
