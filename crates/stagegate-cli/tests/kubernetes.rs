//! The `kubernetes` driver, run by the real `stagegate` binary against a fake Kubernetes
//! API server (`tests/kube/mod.rs`).
//!
//! Kubernetes cannot run on this machine, so its API is faked: an in-process HTTP server on
//! a loopback port implementing only the endpoints stagegate uses (get, server-side apply,
//! merge patch and watch of namespaced objects) and a tiny Deployment controller. Seed 001's
//! flow: `kubectl apply`, `kubectl rollout status`, `kubectl rollout undo`.

mod common;
mod kube;

use std::time::Duration;

use common::{Project, status_json, walk};
use kube::{FakeKube, READ_ONLY_TOKEN, TOKEN};

const PLAN: &str = r#"project: architect
environments:
  staging:
    secrets: { optional: [DB_PASSWORD] }
services:
  api:
    driver: kubernetes
    manifests: k8s/
    kubeconfig: kubeconfig
    context: fake
    namespace: staging
    deployment: architect-api
    timeout: 3s
stages:
  deploy:
    - deploy: api
"#;

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: architect-api
  labels: { app: architect-api, environment: staging }
spec:
  replicas: 3
  selector:
    matchLabels: { app: architect-api }
  template:
    metadata:
      labels: { app: architect-api }
    spec:
      containers:
      - name: architect-api
        image: staging-registry.example.com/architect-api:${{ release.version }}
        env:
        - name: ENV
          value: staging
        envFrom:
        - secretRef: { name: architect-secrets }
"#;

const SERVICE_AND_SECRET: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: architect-api
spec:
  ports:
  - { port: 443, targetPort: http, name: https }
  selector: { app: architect-api }
---
apiVersion: v1
kind: Secret
metadata:
  name: architect-secrets
stringData:
  DATABASE_PASSWORD: "${{ secrets.DB_PASSWORD || 'unset' }}"
"#;

const SECRET: &str = "kube-db-secret-4711";

fn project(fake: &FakeKube, plan: &str) -> Project {
    let p = Project::new(plan);
    p.write("k8s/deployment.yaml", DEPLOYMENT);
    p.write("k8s/service.yaml", SERVICE_AND_SECRET);
    fake.kubeconfig(&p.path().join("kubeconfig"), TOKEN);
    p
}

fn deploy(p: &Project, version: &str) -> common::Out {
    p.run_env(
        &["deploy", "staging", "--release-version", version],
        &[("DB_PASSWORD", SECRET)],
    )
}

fn image_of(body: &serde_json::Value) -> String {
    body.pointer("/spec/template/spec/containers/0/image")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string()
}

fn api(p: &Project) -> serde_json::Value {
    status_json(p, "staging")["services"][0].clone()
}

#[test]
fn deploys_applies_server_side_and_waits_for_the_rollout() {
    let fake = FakeKube::start(Duration::from_millis(300));
    let p = project(&fake, PLAN);
    deploy(&p, "1.0.0").code(0);

    let applies = fake.applies("deployments", "architect-api");
    assert_eq!(applies.len(), 1, "{applies:?}");
    let a = &applies[0];
    assert_eq!(
        a.query.get("fieldManager").map(String::as_str),
        Some("stagegate")
    );
    assert_eq!(a.query.get("force").map(String::as_str), Some("true"));
    assert_eq!(a.content_type, "application/apply-patch+yaml");
    assert!(
        a.path
            .starts_with("/apis/apps/v1/namespaces/staging/deployments/")
    );
    assert_eq!(
        image_of(&a.json()),
        "staging-registry.example.com/architect-api:1.0.0"
    );
    assert_eq!(fake.applies("services", "architect-api").len(), 1);
    assert_eq!(fake.applies("secrets", "architect-secrets").len(), 1);
    // The rollout was watched, not polled.
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.query.get("watch").map(String::as_str) == Some("true")),
        "no watch request"
    );
    let d = fake
        .object("deployments", "staging", "architect-api")
        .unwrap();
    assert_eq!(d["status"]["availableReplicas"], 3);

    let meta: serde_json::Value =
        serde_json::from_str(&p.read(".stagegate/releases/staging/api/1.0.0-d1/release.json"))
            .unwrap();
    assert_eq!(meta["status"], "healthy");
    let k = &meta["kubernetes"];
    assert_eq!(k["namespace"], "staging");
    assert_eq!(k["context"], "fake");
    assert_eq!(k["manifest_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(
        k["deployments"][0]["images"][0],
        "staging-registry.example.com/architect-api:1.0.0"
    );
    assert_eq!(k["deployments"][0]["revision"], "1");
    let manifests = p.read(".stagegate/releases/staging/api/1.0.0-d1/manifests.yaml");
    assert!(manifests.contains("architect-api:1.0.0"), "{manifests}");
    assert!(
        manifests.contains("${{ secrets.DB_PASSWORD }}"),
        "{manifests}"
    );

    let s = api(&p);
    assert_eq!(s["current"], "1.0.0-d1");
    assert_eq!(s["running"], true);
    p.run(&["status", "staging"])
        .code(0)
        .stdout_has("running: deployment architect-api 3/3 available, revision 1");
}

#[test]
fn a_progress_deadline_rolls_back_by_reapplying_the_previous_manifests() {
    let fake = FakeKube::start(Duration::from_millis(300));
    let p = project(&fake, PLAN);
    deploy(&p, "1.0.0").code(0);
    deploy(&p, "1.1.0-bad")
        .code(4)
        .stderr_has("deployment/architect-api exceeded its progress deadline")
        .stderr_has("restore api to 1.0.0-d1")
        .stderr_has("rolled back");

    let applies = fake.applies("deployments", "architect-api");
    let images: Vec<String> = applies.iter().map(|a| image_of(&a.json())).collect();
    assert_eq!(
        images,
        [
            "staging-registry.example.com/architect-api:1.0.0",
            "staging-registry.example.com/architect-api:1.1.0-bad",
            "staging-registry.example.com/architect-api:1.0.0",
        ]
    );
    assert_eq!(
        applies[2].query.get("fieldManager").map(String::as_str),
        Some("stagegate")
    );
    // The secret was read anew for the re-apply: the recorded manifest holds only its name.
    let secret = fake.applies("secrets", "architect-secrets");
    assert!(secret.last().unwrap().body.contains(SECRET));

    let d = fake
        .object("deployments", "staging", "architect-api")
        .unwrap();
    assert_eq!(d["status"]["availableReplicas"], 3);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let s = api(&p);
    assert_eq!(s["current"], "1.0.0-d1");
    let bad = s["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["meta"]["id"] == "1.1.0-bad-d2")
        .unwrap()
        .clone();
    assert_eq!(bad["meta"]["status"], "rolled_back");
}

#[test]
fn a_first_release_that_fails_its_rollout_is_scaled_to_zero() {
    let fake = FakeKube::start(Duration::from_millis(200));
    let p = project(&fake, PLAN);
    deploy(&p, "1.0.0-bad")
        .code(4)
        .stderr_has("exceeded its progress deadline")
        .stderr_has("restore api to no release");
    let d = fake
        .object("deployments", "staging", "architect-api")
        .unwrap();
    assert_eq!(d["spec"]["replicas"], 0);
    assert_eq!(api(&p)["current"], serde_json::Value::Null);
}

#[test]
fn a_rollout_slower_than_the_timeout_fails_and_rolls_back() {
    let fake = FakeKube::start(Duration::from_millis(300));
    let p = project(&fake, PLAN);
    deploy(&p, "1.0.0").code(0);
    deploy(&p, "1.2.0-slow")
        .code(4)
        .stderr_has("did not finish its rollout within 3s")
        .stderr_has("restore api to 1.0.0-d1");
    assert_eq!(api(&p)["current"], "1.0.0-d1");
}

#[test]
fn manual_rollback_reapplies_the_previous_release() {
    let fake = FakeKube::start(Duration::from_millis(200));
    let p = project(&fake, PLAN);
    deploy(&p, "1.0.0").code(0);
    deploy(&p, "2.0.0").code(0);
    p.run_env(&["rollback", "staging"], &[("DB_PASSWORD", SECRET)])
        .code(0)
        .stderr_has("restore api to 1.0.0-d1");
    let applies = fake.applies("deployments", "architect-api");
    assert_eq!(
        image_of(&applies.last().unwrap().json()),
        "staging-registry.example.com/architect-api:1.0.0"
    );
    assert_eq!(api(&p)["current"], "1.0.0-d1");
    p.run(&["status", "staging"])
        .code(0)
        .stdout_has("image staging-registry.example.com/architect-api:1.0.0");
}

#[test]
fn stop_scales_the_deployment_to_zero() {
    let fake = FakeKube::start(Duration::from_millis(200));
    let p = project(&fake, PLAN);
    deploy(&p, "1.0.0").code(0);
    p.run(&["stop", "staging"]).code(0);
    let d = fake
        .object("deployments", "staging", "architect-api")
        .unwrap();
    assert_eq!(d["spec"]["replicas"], 0);
    let merge = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH" && r.content_type.starts_with("application/merge-patch"))
        .expect("a merge patch scaled it");
    assert_eq!(merge.json()["spec"]["replicas"], 0);
}

#[test]
fn a_rejected_token_is_a_clear_error() {
    let fake = FakeKube::start(Duration::from_millis(200));
    let p = project(&fake, PLAN);
    fake.kubeconfig(&p.path().join("kubeconfig"), "expired-token");
    let o = deploy(&p, "1.0.0");
    o.stderr_has("refused the credentials of context `fake` (401 Unauthorized)")
        .lacks("expired-token");
    // Refused at the first apply: nothing changed, nothing to roll back.
    o.code(3).stderr_has("nothing to roll back");
    assert_eq!(api(&p)["current"], serde_json::Value::Null);
}

#[test]
fn a_token_that_may_not_apply_is_a_clear_error() {
    let fake = FakeKube::start(Duration::from_millis(200));
    let p = project(&fake, PLAN);
    fake.kubeconfig(&p.path().join("kubeconfig"), READ_ONLY_TOKEN);
    deploy(&p, "1.0.0")
        .code(3)
        .stderr_has("context `fake` is not allowed to apply Deployment/architect-api in namespace staging (403 Forbidden)")
        .stderr_has("cannot patch resource");
}

#[test]
fn a_missing_namespace_an_invalid_object_and_an_unreachable_api_are_clear_errors() {
    let fake = FakeKube::start(Duration::from_millis(200));
    let p = project(
        &fake,
        &PLAN.replace("namespace: staging", "namespace: nowhere"),
    );
    deploy(&p, "1.0.0").stderr_has("namespace `nowhere` does not exist");

    let p = project(&fake, PLAN);
    p.write(
        "k8s/deployment.yaml",
        &DEPLOYMENT.replace(
            "image: staging-registry.example.com/architect-api:${{ release.version }}",
            "image: \"\"",
        ),
    );
    deploy(&p, "1.0.0")
        .stderr_has("the API server says it is invalid")
        .stderr_has("spec.template.spec.containers[0].image: Required value");

    let p = project(&fake, PLAN);
    let port = fake.port;
    drop(fake);
    deploy(&p, "1.0.0").code(3).stderr_has(&format!(
        "cannot reach the Kubernetes API at http://127.0.0.1:{port}"
    ));
    let p2 = project(
        &FakeKube::start(Duration::ZERO),
        &PLAN.replace("context: fake", "context: prod"),
    );
    deploy(&p2, "1.0.0").stderr_has("context `prod` is not in the kubeconfig (its contexts: fake)");
}

#[test]
fn validation_names_unknown_keys_and_missing_manifests_with_file_and_line() {
    let missing_file = Project::new(
        "project: x
environments: { staging: {} }
services:
  web:
    driver: kubernetes
    manifests: [k8s/missing.yaml]
stages:
  deploy:
    - deploy: web
",
    );
    // An earlier step may write it: a warning at validate, an error at deploy.
    missing_file
        .run(&["validate"])
        .code(0)
        .stderr_has("stagegate.yml:6:")
        .stderr_has("manifest `k8s/missing.yaml` of service `web` does not exist (yet)");
    missing_file
        .run(&["deploy", "staging", "--release-version", "1.0.0"])
        .stderr_has("manifest `k8s/missing.yaml` does not exist");
    let p = Project::new(
        "project: x
environments: { staging: {} }
services:
  api:
    driver: kubernetes
    namespace: staging
    replicas: 3
    health: { path: /health }
stages:
  deploy:
    - deploy: api
",
    );
    let o = p.run(&["validate"]);
    o.code(2)
        .stderr_has("stagegate.yml:4:")
        .stderr_has("has no `manifests`")
        .stderr_has("stagegate.yml:7:")
        .stderr_has("unknown key `replicas`")
        .stderr_has("stagegate.yml:8:")
        .stderr_has("a kubernetes service has no address of its own");
}

#[test]
fn a_secret_in_a_manifest_never_reaches_output_logs_store_or_records() {
    let fake = FakeKube::start(Duration::from_millis(200));
    let p = project(&fake, PLAN);
    let mut outs = vec![deploy(&p, "1.0.0")];
    outs[0].code(0);
    outs.push(deploy(&p, "1.1.0-bad"));
    outs.push(p.run_env(&["plan", "staging"], &[("DB_PASSWORD", SECRET)]));
    outs.push(p.run(&["status", "staging", "--json"]));
    outs.push(p.run(&["history"]));
    for o in &outs {
        o.lacks(SECRET);
    }
    // It was used: the cluster got it.
    assert!(
        fake.applies("secrets", "architect-secrets")
            .iter()
            .all(|a| a.body.contains(SECRET))
    );
    for f in walk(&p.path().join(".stagegate")) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(SECRET),
            "{} holds the secret",
            f.display()
        );
    }
}

#[test]
fn plan_says_what_the_driver_will_do() {
    let fake = FakeKube::start(Duration::ZERO);
    let p = project(&fake, PLAN);
    p.run(&["plan", "staging"])
        .code(0)
        .stdout_has("driver: kubernetes")
        .stdout_has(
            "server-side apply k8s/ to namespace staging (context fake), wait for the rollout of deployment/architect-api (3s)",
        );
    p.run(&["explain", "manifests"])
        .code(0)
        .stdout_has("applied server-side (field manager `stagegate`)");
}
