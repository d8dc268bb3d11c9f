//! `agora workflow ...`: run a workflow (steps that depend on each other), follow it, list and
//! cancel workflows.

use std::io::Read as _;
use std::time::Duration;

use agora_nats::AgoraClient;
use agora_nats::tasks::wire::{WorkflowListRequest, WorkflowSubmitRequest, WorkflowView};
use clap::Subcommand;
use futures::StreamExt;

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Run a workflow described in JSON (a file, or `-` for standard input):
    /// `{"name":"report","steps":[{"name":"a","op":"count_words","args":{"text":"x y"}},
    /// {"name":"total","op":"sum","after":["a"],"feed":"numbers","on_failure":"stop"}]}`.
    /// See docs/subjects.md, Workflows.
    Run {
        /// The workflow's JSON file, or `-`.
        file: String,
        /// Client id: running the same id again returns the same workflow.
        #[arg(long)]
        id: Option<String>,
        /// Follow it until it ends, printing each step as it changes.
        #[arg(long)]
        wait: bool,
    },
    /// A workflow's steps (state, task, result or error) and history.
    Get { id: String },
    /// Your workflows, newest first (a manager: everyone's, or `--owner`'s).
    List {
        /// running, completed, failed, cancelled, compensating, compensated.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only workflows older than this id (the previous page's last).
        #[arg(long)]
        before: Option<String>,
    },
    /// Cancel a workflow: its running steps are cancelled, nothing more starts.
    Cancel { id: String },
}

fn terminal(state: &str) -> bool {
    !matches!(state, "running" | "compensating")
}

pub async fn run(client: &AgoraClient, command: WorkflowCommand, json: bool) -> anyhow::Result<()> {
    match command {
        WorkflowCommand::Run { file, id, wait } => {
            let mut text = String::new();
            if file == "-" {
                std::io::stdin().read_to_string(&mut text)?;
            } else {
                text = std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))?;
            }
            let mut request: WorkflowSubmitRequest = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{file} is not a workflow: {e}"))?;
            if id.is_some() {
                request.id = id;
            }
            // Subscribe first, so no step's end is missed while following.
            let mut events = if wait {
                let filter = crate::task::events_filter(client, None).await?;
                Some(client.nats().subscribe(filter).await?)
            } else {
                None
            };
            let mut workflow = client.submit_workflow(&request).await?;
            let Some(events) = events.as_mut() else {
                print_workflow(&workflow, json);
                return Ok(());
            };
            let mut shown = String::new();
            loop {
                let line = progress(&workflow);
                if !json && line != shown {
                    println!("{line}");
                    shown = line;
                }
                if terminal(&workflow.state) {
                    break;
                }
                // A step's task event (or, at the latest, a second) says to look again.
                tokio::time::timeout(Duration::from_secs(1), events.next()).await.ok();
                workflow = client.workflow(&workflow.id).await?;
            }
            print_workflow(&workflow, json);
            if workflow.state != "completed" {
                anyhow::bail!("workflow {} {}", workflow.id, workflow.state);
            }
        }
        WorkflowCommand::Get { id } => print_workflow(&client.workflow(&id).await?, json),
        WorkflowCommand::List { state, owner, limit, before } => {
            let request = WorkflowListRequest { state, owner, before, limit: Some(limit) };
            let reply = client.workflows(&request).await?;
            if json {
                println!("{}", serde_json::to_string(&reply)?);
            } else if reply.workflows.is_empty() {
                println!("no workflows");
            } else {
                println!("{:>8}  {:<12} {:<20} {:<13} steps", "id", "owner", "name", "state");
                for w in &reply.workflows {
                    println!(
                        "{:>8}  {:<12} {:<20} {:<13} {}/{}",
                        w.id,
                        w.owner,
                        w.name.as_deref().unwrap_or("-"),
                        w.state,
                        w.completed_steps,
                        w.step_count
                    );
                }
                if let Some(next) = reply.next_before {
                    println!("more: --before {next}");
                }
            }
        }
        WorkflowCommand::Cancel { id } => print_workflow(&client.cancel_workflow(&id).await?, json),
    }
    Ok(())
}

/// One line: the workflow's state and each step's.
fn progress(workflow: &WorkflowView) -> String {
    let steps = workflow.steps.as_deref().unwrap_or_default();
    let parts: Vec<String> = steps.iter().map(|s| format!("{}={}", s.name, s.state)).collect();
    format!("workflow {} {}: {}", workflow.id, workflow.state, parts.join(" "))
}

fn print_workflow(workflow: &WorkflowView, json: bool) {
    if json {
        println!("{}", serde_json::to_string(workflow).unwrap_or_default());
        return;
    }
    println!(
        "workflow {} {} ({}/{} steps completed){}",
        workflow.id,
        workflow.state,
        workflow.completed_steps,
        workflow.step_count,
        workflow.name.as_deref().map(|n| format!(" {n}")).unwrap_or_default()
    );
    let steps = workflow.steps.as_deref().unwrap_or_default();
    if steps.is_empty() {
        return;
    }
    println!(
        "  {:<20} {:<20} {:<12} {:>8}  {:<20} result / error",
        "step", "state", "op", "task", "after"
    );
    for step in steps {
        let outcome = match (&step.result, &step.error) {
            (_, Some(error)) => error.clone(),
            (Some(result), None) => result.get().to_owned(),
            (None, None) => String::new(),
        };
        println!(
            "  {:<20} {:<20} {:<12} {:>8}  {:<20} {}",
            step.name,
            step.state,
            step.op,
            step.task.as_deref().unwrap_or("-"),
            if step.after.is_empty() { "-".to_owned() } else { step.after.join(",") },
            outcome
        );
    }
}
