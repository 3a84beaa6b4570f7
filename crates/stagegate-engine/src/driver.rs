//! The seam between the run and where services run: [`ServiceDriver`].
//!
//! A driver deploys a service's new release, restores an earlier one, retires the ones a
//! deployment replaced, stops a service, says which release is current and lists the
//! releases with what really runs. The executor, the manual rollback and the CLI's
//! `status`, `stop` and `rollback` use only this trait; they never touch a driver's files.
//! [`driver_for`] builds the drivers of an environment in one place, one per service as the
//! plan's `driver:` says. `local` (release directories and a supervisor per release on this
//! machine) is the default; the others keep their records through [`crate::records`].

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use stagegate_plan::{Driver, Plan, Service};

use crate::event::Events;
use crate::local::{DeployError, Deployed, DriverCtx, LocalDriver, ReleaseState};

/// What a driver's async operations return: boxed, so drivers can sit behind `dyn`.
pub type DriverFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait ServiceDriver: Send + Sync {
    /// The driver's name as the plan spells it (`local`).
    fn name(&self) -> &'static str;

    /// Builds, stages and starts a new release; on failure the service is as it was.
    fn deploy<'a>(
        &'a self,
        svc: &'a Service,
        ctx: &'a DriverCtx<'a>,
    ) -> DriverFuture<'a, Result<Deployed, DeployError>>;

    /// Makes `target` the serving release again (none: stops the service) and stops `from`.
    /// Succeeds only when the target runs and answers its health check.
    fn restore<'a>(
        &'a self,
        svc: &'a Service,
        ctx: &'a DriverCtx<'a>,
        target: Option<&'a str>,
        from: Option<&'a str>,
    ) -> DriverFuture<'a, Result<String, String>>;

    /// Stops the releases a successful deployment replaced; returns their ids.
    fn retire<'a>(&'a self, svc: &'a Service, events: &'a Events) -> DriverFuture<'a, Vec<String>>;

    /// Stops every running release of the service; returns their ids.
    fn stop<'a>(&'a self, svc: &'a Service) -> DriverFuture<'a, Vec<String>>;

    /// Brings the driver's records in line with what runs (releases a dead run left
    /// starting, stops it began); returns the abandoned releases it stopped.
    fn reconcile<'a>(&'a self, svc: &'a Service) -> DriverFuture<'a, Vec<String>>;

    /// Every release on record with what really runs, asked of the target (a remote
    /// driver connects; the local one reads its process table, as `releases` does).
    fn observe<'a>(&'a self, svc: &'a Service) -> DriverFuture<'a, Vec<ReleaseState>> {
        let all = self.releases(&svc.name);
        Box::pin(async move { all })
    }

    /// The current release's id.
    fn current(&self, service: &str) -> Option<String>;

    /// Every release on record, oldest first, with what runs now.
    fn releases(&self, service: &str) -> Vec<ReleaseState>;

    /// The state of one release.
    fn release(&self, service: &str, id: &str) -> Option<ReleaseState> {
        self.releases(service).into_iter().find(|r| r.meta.id == id)
    }

    /// A release by id, or the newest of a version.
    fn find_release(&self, service: &str, wanted: &str) -> Option<ReleaseState>;

    /// The newest release older than the current one that ran healthy.
    fn previous_good(&self, service: &str) -> Option<ReleaseState>;
}

/// The drivers of `environment`'s services, keeping their records under `state_dir`: one
/// [`ServiceDriver`] that hands each call to the driver the service's plan names.
pub fn driver_for(
    plan: &Plan,
    state_dir: &Path,
    environment: &str,
    supervisor_exe: PathBuf,
) -> Box<dyn ServiceDriver> {
    let local = LocalDriver {
        root: state_dir.join("releases").join(environment),
        plan_dir: plan.dir.clone(),
        supervisor_exe,
    };
    let mut others: BTreeMap<String, Box<dyn ServiceDriver>> = BTreeMap::new();
    for svc in &plan.services {
        let driver: Option<Box<dyn ServiceDriver>> = match &svc.driver {
            Driver::Local(_) => None,
            Driver::Ssh(_) => Some(Box::new(crate::ssh::SshDriver::new(
                plan,
                plan.environment(environment),
                state_dir,
                environment,
            ))),
            Driver::Kubernetes(_) => Some(Box::new(crate::kube::KubeDriver {
                records: crate::records::Records::new(state_dir, environment),
                plan_dir: plan.dir.clone(),
            })),
            Driver::Docker(_) => Some(Box::new(crate::docker::DockerDriver {
                records: crate::records::Records::new(state_dir, environment),
                plan_dir: plan.dir.clone(),
                project: plan.project.clone(),
                environment: environment.to_string(),
            })),
            Driver::Compose(_) => Some(Box::new(crate::docker::compose::ComposeDriver {
                records: crate::records::Records::new(state_dir, environment),
                plan_dir: plan.dir.clone(),
                project: plan.project.clone(),
                environment: environment.to_string(),
            })),
        };
        if let Some(d) = driver {
            others.insert(svc.name.clone(), d);
        }
    }
    Box::new(Drivers { local, others })
}

/// Each service's driver: `local` unless the plan names another.
struct Drivers {
    local: LocalDriver,
    others: BTreeMap<String, Box<dyn ServiceDriver>>,
}

impl Drivers {
    fn of(&self, service: &str) -> &dyn ServiceDriver {
        match self.others.get(service) {
            Some(d) => d.as_ref(),
            None => &self.local,
        }
    }
}

impl ServiceDriver for Drivers {
    fn name(&self) -> &'static str {
        "plan"
    }

    fn deploy<'a>(
        &'a self,
        svc: &'a Service,
        ctx: &'a DriverCtx<'a>,
    ) -> DriverFuture<'a, Result<Deployed, DeployError>> {
        self.of(&svc.name).deploy(svc, ctx)
    }

    fn restore<'a>(
        &'a self,
        svc: &'a Service,
        ctx: &'a DriverCtx<'a>,
        target: Option<&'a str>,
        from: Option<&'a str>,
    ) -> DriverFuture<'a, Result<String, String>> {
        self.of(&svc.name).restore(svc, ctx, target, from)
    }

    fn retire<'a>(&'a self, svc: &'a Service, events: &'a Events) -> DriverFuture<'a, Vec<String>> {
        self.of(&svc.name).retire(svc, events)
    }

    fn stop<'a>(&'a self, svc: &'a Service) -> DriverFuture<'a, Vec<String>> {
        self.of(&svc.name).stop(svc)
    }

    fn reconcile<'a>(&'a self, svc: &'a Service) -> DriverFuture<'a, Vec<String>> {
        self.of(&svc.name).reconcile(svc)
    }

    fn observe<'a>(&'a self, svc: &'a Service) -> DriverFuture<'a, Vec<ReleaseState>> {
        self.of(&svc.name).observe(svc)
    }

    fn current(&self, service: &str) -> Option<String> {
        self.of(service).current(service)
    }

    fn releases(&self, service: &str) -> Vec<ReleaseState> {
        self.of(service).releases(service)
    }

    fn release(&self, service: &str, id: &str) -> Option<ReleaseState> {
        self.of(service).release(service, id)
    }

    fn find_release(&self, service: &str, wanted: &str) -> Option<ReleaseState> {
        self.of(service).find_release(service, wanted)
    }

    fn previous_good(&self, service: &str) -> Option<ReleaseState> {
        self.of(service).previous_good(service)
    }
}

impl ServiceDriver for LocalDriver {
    fn name(&self) -> &'static str {
        "local"
    }

    fn deploy<'a>(
        &'a self,
        svc: &'a Service,
        ctx: &'a DriverCtx<'a>,
    ) -> DriverFuture<'a, Result<Deployed, DeployError>> {
        Box::pin(LocalDriver::deploy(self, svc, ctx))
    }

    fn restore<'a>(
        &'a self,
        svc: &'a Service,
        ctx: &'a DriverCtx<'a>,
        target: Option<&'a str>,
        from: Option<&'a str>,
    ) -> DriverFuture<'a, Result<String, String>> {
        Box::pin(LocalDriver::restore(self, svc, ctx, target, from))
    }

    fn retire<'a>(&'a self, svc: &'a Service, events: &'a Events) -> DriverFuture<'a, Vec<String>> {
        Box::pin(self.retire_others(svc, events))
    }

    fn stop<'a>(&'a self, svc: &'a Service) -> DriverFuture<'a, Vec<String>> {
        Box::pin(self.stop_service(svc))
    }

    fn reconcile<'a>(&'a self, svc: &'a Service) -> DriverFuture<'a, Vec<String>> {
        Box::pin(LocalDriver::reconcile(self, svc))
    }

    fn current(&self, service: &str) -> Option<String> {
        LocalDriver::current(self, service)
    }

    fn releases(&self, service: &str) -> Vec<ReleaseState> {
        LocalDriver::releases(self, service)
    }

    fn release(&self, service: &str, id: &str) -> Option<ReleaseState> {
        LocalDriver::release(self, service, id)
    }

    fn find_release(&self, service: &str, wanted: &str) -> Option<ReleaseState> {
        LocalDriver::find_release(self, service, wanted)
    }

    fn previous_good(&self, service: &str) -> Option<ReleaseState> {
        LocalDriver::previous_good(self, service)
    }
}
