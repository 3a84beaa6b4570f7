//! Step kinds beyond `run` and `deploy`: where each one plugs into plan reading.
//!
//! A kind is one module that owns its spec type and reader. To add one:
//! 1. add its action key(s) to [`ACTIONS`] and a branch to [`read`];
//! 2. add a variant to [`crate::StepKind`] and its arms in `name`, `templates`,
//!    `default_name` and `describe`;
//! 3. in the engine, add its arm in `executor::Runner::run_step`, returning a `StepOutcome`.
//!
//! The reader checks the step's keys itself (`common` lists the keys every step may have).

use marked_yaml::types::MarkedMappingNode;

use crate::model::{Plan, StepKind};
use crate::yaml::Cx;

/// Action keys of the kinds defined outside `run` and `deploy`.
pub const ACTIONS: &[&str] = &[
    "gate",
    "http",
    "command",
    "tcp",
    "log",
    "file",
    "prometheus",
    "load",
    "watch",
    "migrate",
];

/// Reads a step whose action is `action` (one of [`ACTIONS`]).
pub(crate) fn read(
    cx: &mut Cx,
    action: &str,
    m: &MarkedMappingNode,
    what: &str,
    common: &[&str],
) -> Option<StepKind> {
    match action {
        "gate" => crate::gate::read(cx, m, what, common),
        "load" => crate::load::read(cx, m, what, common),
        "watch" => crate::watch::read(cx, m, what, common),
        "migrate" => crate::migrate::read(cx, m, what, common),
        // Checks (crate::check): `http`, `command`, `tcp`, `log`, `file`.
        _ => {
            debug_assert!(crate::check::CHECK_ACTIONS.contains(&action), "{action}");
            crate::check::read(cx, action, m, what, common)
                .map(|spec| StepKind::Check(Box::new(spec)))
        }
    }
}

/// Checks of the kinds that need the whole plan (run after every section is read).
pub(crate) fn check_plan(cx: &mut Cx, plan: &Plan) {
    crate::gate::check_plan(cx, plan);
    crate::load::check_plan(cx, plan);
}
