//! The stagegate engine: runs a validated plan against an environment.
//!
//! [`run_deploy`] walks the stages in order. Each step runs as a child process group
//! ([`process`]) or a driver call (the [`local`] driver: release directories, a detached
//! [`supervisor`] per release, [`health`] waits). What can be undone is remembered; when a
//! step fails after something changed, the executor undoes it newest first. A [`gate`] step
//! checks and changes nothing; its evidence goes in the step's details. A [`migrate`] step
//! takes a backup ([`postgres`]: `pg_dump`, and a restore in one transaction), runs `up`, and
//! leaves `down` and the restore to the rollback. Progress leaves
//! the engine only as [`Event`]s: the engine never prints.
//!
//! Exit codes are a contract, defined in [`exit`].

pub mod check;
pub mod details;
pub mod docker;
pub mod driver;
pub mod event;
pub mod executor;
pub mod exit;
pub mod gate;
pub mod health;
pub mod kube;
pub mod load;
pub mod local;
pub mod migrate;
pub mod notify;
pub mod poll;
pub mod postgres;
pub mod process;
pub mod records;
pub mod session;
pub mod ssh;
pub mod stats;
pub mod step;
pub mod supervisor;
pub mod watch;

pub use details::{
    CaptureNote, CheckDetails, LoadDetails, NoDetails, ObservedSummary, RepeatTotals,
    ServiceDetails, SkipDetails, StepDetails,
};
pub use driver::{DriverFuture, ServiceDriver, driver_for};
pub use event::{Event, Events, Millis, Outcome, Phase, StepRef, StepResult, StepStatus, now_ms};
pub use executor::{
    RunReport, RunRequest, ServiceRequest, run_deploy, run_manual_rollback, run_manual_rollback_of,
};
pub use local::{LocalDriver, ReleaseMeta, ReleaseState};
pub use session::{
    EventSink, LockPolicy, LockRefusal, Notice, RunControl, Session, SessionError, SessionKind,
    SessionRelease, SinkError,
};
pub use step::{RunInputs, StepCtx, StepFilter, StepOutcome};
