//! Charts of one stored deployment for the page: the latency of each load step and each
//! bake measurement over its rounds, as the self-contained HTML report draws them (inline
//! SVG from `stagegate_report::html`, every label escaped there).

use serde_json::{Value, json};
use stagegate_engine::StepDetails;
use stagegate_store::{EventRecord, StepRun};

/// `[{ step, title, svg }]` for the load and watch steps of a deployment, in step order.
pub fn of(steps: &[StepRun], events: &[EventRecord]) -> Vec<Value> {
    let mut out = Vec::new();
    for s in steps {
        let Ok(details) = serde_json::from_value::<StepDetails>(s.details.clone()) else {
            continue;
        };
        if let Some(l) = details.load() {
            let title = format!("{}: latency (ms)", s.name);
            out.push(json!({
                "step": s.step_id,
                "title": title,
                "svg": stagegate_report::html::latency_chart(&title, &l.load),
            }));
        }
        if let Some(w) = details.watch() {
            let rounds: Vec<&EventRecord> = events
                .iter()
                .filter(|e| e.kind == "measurement_round" && e.data["step_id"] == *s.step_id)
                .collect();
            for (i, m) in w.measurements.iter().enumerate() {
                let points: Vec<(u32, f64)> = rounds
                    .iter()
                    .filter_map(|e| {
                        let round = u32::try_from(e.data["round"].as_u64()?).ok()?;
                        let v = e.data["samples"][i]["value"].as_f64()?;
                        v.is_finite().then_some((round, v))
                    })
                    .collect();
                if points.len() >= 2 {
                    let title = format!("{}: {}", s.name, m.name);
                    out.push(json!({
                        "step": s.step_id,
                        "title": title,
                        "svg": stagegate_report::html::line_chart(&title, &points),
                    }));
                }
            }
        }
    }
    out
}
