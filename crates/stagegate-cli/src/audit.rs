//! `stagegate audit verify` and `audit show`: the store's hash chain, checked or printed.

use stagegate_engine::exit;
use stagegate_report::format_time_ms;

use crate::cli::{AuditAction, Cli};
use crate::context::{CmdResult, Failure, load_plan, open_store};

pub async fn run(cli: &Cli, action: &AuditAction) -> CmdResult {
    let plan = load_plan(cli)?;
    let store = open_store(cli, &plan).await?;
    match action {
        AuditAction::Verify { json } => {
            let report = store.verify_audit().await?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report)
                        .map_err(|e| Failure::internal(e.to_string()))?
                );
            }
            match &report.problem {
                None => {
                    if !*json {
                        println!(
                            "audit log intact: {} records; {} deployments{} and {} steps match it{}",
                            report.records,
                            report.deployments_checked,
                            if report.decisions_checked > 0 {
                                format!(", {} decisions", report.decisions_checked)
                            } else {
                                String::new()
                            } + &if report.approvals_checked > 0 {
                                format!(", {} approvals", report.approvals_checked)
                            } else {
                                String::new()
                            },
                            report.steps_checked,
                            if report.deployments_before_log > 0 {
                                format!(
                                    " ({} deployments recorded before the log began are not covered)",
                                    report.deployments_before_log
                                )
                            } else {
                                String::new()
                            }
                        );
                        println!("head: {}", report.head);
                        println!(
                            "  = note: keep the head elsewhere (a CI log, a ticket): a later `audit verify` whose chain still contains it proves nothing before it changed"
                        );
                    }
                    Ok(exit::SUCCESS)
                }
                Some(p) => {
                    eprintln!(
                        "error: the audit log is broken at {}: it {}",
                        p.link, p.what
                    );
                    eprintln!(
                        "  = help: the state store was changed outside stagegate; restore it from a backup, or keep it aside as evidence (`stagegate audit show` lists the records)"
                    );
                    Ok(exit::FAILED)
                }
            }
        }
        AuditAction::Show { json } => {
            let records = store.audit_log().await?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&records)
                        .map_err(|e| Failure::internal(e.to_string()))?
                );
                return Ok(exit::SUCCESS);
            }
            for r in &records {
                println!(
                    "#{:<5} {}  {:<20} {:<8} {}  {}",
                    r.seq,
                    format_time_ms(r.at),
                    r.kind,
                    r.deployment_id
                        .map(|d| format!("#{d}"))
                        .unwrap_or_else(|| "-".into()),
                    &r.hash[..16],
                    r.data
                );
            }
            Ok(exit::SUCCESS)
        }
    }
}
