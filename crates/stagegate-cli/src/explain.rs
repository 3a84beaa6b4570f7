//! `stagegate explain KEY`: what a plan field means, its default and an example.

use stagegate_engine::exit;

use crate::context::{CmdResult, Failure};

/// (key, meaning, default, example)
const FIELDS: &[(&str, &str, &str, &str)] = &[
    (
        "project",
        "The project's name, recorded with every deployment.",
        "required",
        "project: erp-hub",
    ),
    (
        "release.version",
        "The release version. `--release-version` overrides it.",
        "`git describe --tags --always --dirty`, else 0.0.0-dev",
        "release: { version: \"${{ env.VERSION }}\" }",
    ),
    (
        "release.sha",
        "The release's git commit. `--release-sha` overrides it.",
        "`git rev-parse HEAD`, else unknown",
        "release: { sha: \"${{ env.GITHUB_SHA }}\" }",
    ),
    (
        "vars",
        "Named values for templates (`${{ vars.NAME }}`), for every environment; an environment's `vars` override them, `--var NAME=VALUE` overrides both.",
        "none",
        "vars: { base: \"http://127.0.0.1:8000\" }",
    ),
    (
        "secrets",
        "Secret names: `require` must have a value, `optional` may. Values come from the process environment, then the dotenv file. They print as ***.",
        "dotenv: .env.ENVIRONMENT when it exists",
        "secrets: { require: [ADMIN_TOKEN], dotenv: .env.staging }",
    ),
    (
        "environments",
        "The environments a plan deploys to, each with `vars`, `secrets`, `services` overrides and `on_failure`, and protection: `promote_from`, `soak`, `wait_timer`, `tags`, `approvals`, `bypass`.",
        "required, at least one",
        "environments:\n  staging:\n    vars: { base: \"http://127.0.0.1:8000\" }",
    ),
    (
        "environments.services",
        "Per-environment changes to a service: `env`, `port`, `start`.",
        "none",
        "environments:\n  staging:\n    services:\n      web: { port: 8080 }",
    ),
    (
        "roles",
        "Who is in which role, for `approvals.from` and `bypass.by`: role -> people's names. `stagegate approve --role ROLE` must name a role the approver is in. See docs/promotion.md.",
        "none",
        "roles:\n  security: [alice]\n  devops: [bob, olga]",
    ),
    (
        "triggers",
        "GitHub events that `stagegate serve` turns into runs: `on: push` with `branch` globs runs `deploy` of the pushed commit; `on: release` with `tags` globs runs `deploy` of the tag or `promote`. Webhooks are checked by signature and delivery id. See docs/server.md.",
        "none",
        "triggers:\n  - { on: push, branch: main, deploy: staging }\n  - { on: release, tags: \"v*\", promote: { from: staging, to: production } }",
    ),
    (
        "environments.promote_from",
        "Releases reach this environment only by `stagegate promote FROM ENV`: the newest deployment of FROM that succeeded and still runs, its artifacts pinned (a build that differs fails). A plain `deploy` is refused (exit 9) unless `bypass` allows it.",
        "none: direct deploys",
        "production:\n  promote_from: staging",
    ),
    (
        "environments.soak",
        "How long the artifact must have run in `promote_from` (since its deployment there passed, still running) before it may be promoted. Until then the promotion waits (exit 8).",
        "none",
        "production: { promote_from: staging, soak: 48h }",
    ),
    (
        "environments.wait_timer",
        "How long after a promotion (or deploy) of an artifact is first asked for before it may run.",
        "none",
        "production: { wait_timer: 24h }",
    ),
    (
        "environments.tags",
        "Glob patterns the release version must match to reach this environment (e.g. release tags); others are refused (exit 9).",
        "any version",
        "production: { tags: \"v*\" }",
    ),
    (
        "environments.approvals",
        "N approvals before a deploy or promotion runs: `required`, `from` (roles of `roles`, or names), `self_approve` (default false: the requester cannot approve), `distinct_roles` (default false). Bound to the plan's hash and the artifact digest; `stagegate approve ENV`.",
        "none",
        "production:\n  approvals: { required: 2, from: [security, devops], distinct_roles: true }",
    ),
    (
        "environments.bypass",
        "Who may skip `promote_from` and `soak` with `deploy ENV --bypass REASON` (roles or names); recorded in the audit log. Approvals and the wait timer still apply. Without it nobody can bypass, administrators included.",
        "nobody",
        "production:\n  bypass: { by: [tech-lead] }",
    ),
    (
        "notify",
        "Who hears about runs: a list of `slack: URL` (a Slack incoming webhook) or `webhook: URL` (JSON to any endpoint, signed with HMAC-SHA256 in X-Stagegate-Signature-256 when `secret` is set) entries, each with `on` (events), `retries` (0-10, backoff from 500ms), `timeout` and `link`. Sent in the background; a failed send is a warning naming the notifier by index and host, never the URL, and never changes the exit code. URLs and secrets are templates, usually `${{ secrets.NAME }}`. See docs/notifications.md.",
        "none",
        "notify:\n  - slack: \"${{ secrets.SLACK_WEBHOOK_URL }}\"\n    on: [failed, rolled_back, awaiting_approval]",
    ),
    (
        "notify.on",
        "The events a notifier sends: started, succeeded, failed, rolled_back, rollback_failed, awaiting_decision, interrupted (a run's start and end) and awaiting_approval (a protected deploy or promotion that opened a request).",
        "every event",
        "notify:\n  - webhook: https://hooks.example.com/stagegate\n    on: [started, succeeded, failed]",
    ),
    (
        "environments.notify",
        "Notifiers for runs of this environment only, beside the plan's `notify` (both are told).",
        "none",
        "production:\n  notify:\n    - webhook: https://hooks.example.com/prod",
    ),
    (
        "services",
        "What gets deployed. Each service has a driver (`local`), a start command and a health check.",
        "none",
        "services:\n  web:\n    start: ./web --port $PORT",
    ),
    (
        "services.driver",
        "How the service runs. `local`: a supervised process in its own release directory under .stagegate/releases. `kubernetes`: server-side apply of its manifests and a watch of the rollout (docs/drivers-kubernetes.md).",
        "local",
        "driver: local",
    ),
    (
        "services.build",
        "A command run in the plan directory before the release is made (output in the step log).",
        "none",
        "build: cargo build --release -p web",
    ),
    (
        "services.artifacts",
        "Files or directories, relative to the plan, copied into the release directory (and digested with sha256).",
        "none",
        "artifacts: [target/release/web]",
    ),
    (
        "services.start",
        "The command that starts the service, run with `sh -c` in the release directory. It gets PORT, STAGEGATE_RELEASE and the service's `env`.",
        "required",
        "start: ./target/release/web",
    ),
    (
        "services.env",
        "Environment variables of the service process; templates allowed.",
        "none",
        "env: { APP_VERSION: \"${{ release.version }}\" }",
    ),
    (
        "services.port",
        "`auto`: a free loopback port per release; the new release starts beside the old, which runs until the deployment passes. A number: the old release stops, the new one starts on that port.",
        "auto",
        "port: 8080",
    ),
    (
        "services.stop_timeout",
        "How long a stopping service gets between SIGTERM and SIGKILL.",
        "10s",
        "stop_timeout: 30s",
    ),
    (
        "services.keep",
        "How many releases stay on disk (local) or on record (kubernetes) for rollback (at least 2).",
        "3 (local), 5 (kubernetes)",
        "keep: 5",
    ),
    (
        "services.depends_on",
        "Services that must come first; cycles are errors.",
        "none",
        "depends_on: [db]",
    ),
    (
        "services.manifests",
        "kubernetes: YAML files or directories, relative to the plan, rendered with the plan's templates and applied server-side (field manager `stagegate`).",
        "required",
        "manifests: k8s/staging/",
    ),
    (
        "services.namespace",
        "kubernetes: the namespace of objects that name none; a template.",
        "the context's namespace, else default",
        "namespace: architect-staging",
    ),
    (
        "services.context",
        "kubernetes: the kubeconfig context; a template.",
        "the kubeconfig's current context",
        "context: staging",
    ),
    (
        "services.kubeconfig",
        "kubernetes: the kubeconfig file, relative to the plan.",
        "KUBECONFIG, else ~/.kube/config",
        "kubeconfig: kube/staging.yaml",
    ),
    (
        "services.deployment",
        "kubernetes: the Deployment(s) whose rollout the deploy waits for (by a watch).",
        "every Deployment in the manifests",
        "deployment: architect-api",
    ),
    (
        "services.health",
        "Poll until the service answers as expected: `path` (on the release's URL) or `url`, `expect.status`, `expect.json` (JSONPath: value), `interval`, `timeout`.",
        "status 200, interval 250ms, timeout 60s",
        "health:\n  path: /health\n  expect: { status: 200, json: { \"$.version\": \"${{ release.version }}\" } }\n  timeout: 30s",
    ),
    (
        "stages",
        "Ordered stages, each a list of steps. A step has one action: `run` (a shell command), `deploy` (a service), `migrate` (a database migration), a check (`http`, `command`, `tcp`, `log`, `file`, `prometheus`), a `gate`, a `load` test or a `watch` (a bake).",
        "required",
        "stages:\n  deploy:\n    - deploy: web\n  verify:\n    - run: curl -fsS ${{ services.web.url }}/health",
    ),
    (
        "steps.id",
        "A name for the step, used in `${{ steps.ID.outputs.NAME }}` and records.",
        "STAGE-N",
        "id: migrate",
    ),
    (
        "steps.name",
        "A readable name for progress and reports.",
        "the command's first line",
        "name: Run database migrations",
    ),
    (
        "steps.run",
        "A shell command (`sh -c`) run in the plan directory. It may write `NAME=value` lines to the file named by $STAGEGATE_OUTPUT; they become `steps.ID.outputs.NAME`.",
        "-",
        "run: echo \"digest=$(sha256sum app | cut -c1-64)\" >> \"$STAGEGATE_OUTPUT\"",
    ),
    (
        "steps.deploy",
        "Deploys a service with its driver: build, release directory, start, health wait. Rolled back to the previous release on failure.",
        "-",
        "deploy: web",
    ),
    (
        "steps.http",
        "An HTTP check: `http: URL` (a GET) or `method`, `url`, `headers`, `query`, `auth` (bearer, basic), a body (`json`, `form`, `multipart`, `body` with files or `random_bytes`), `timeout`, `follow_redirects`, `tls` (`insecure`, `ca`), `save`, `max_body`. See docs/checks.md.",
        "GET; expects a 2xx status; timeout: the step's, else 30s",
        "http:\n  method: POST\n  url: \"${{ services.hub.url }}/secure/files/upload\"\n  auth: { bearer: \"${{ secrets.ADMIN_TOKEN }}\" }\n  multipart: { file: { random_bytes: 10MiB, seed: 7 } }\nexpect: { status: 201 }",
    ),
    (
        "steps.command",
        "A command check: runs `sh -c` and asserts `exit_code`, `stdout`, `stderr`, `json` (stdout as JSON), `sha256`, `duration`.",
        "expects exit code 0",
        "command: ./hub key-length\nexpect: { stdout: { matches: \"^Key length: 32 bytes$\" } }",
    ),
    (
        "steps.tcp",
        "A TCP check: `HOST:PORT` must accept a connection (`expect: { open: false }`: must not).",
        "expects the port open; 5s to connect",
        "tcp: \"127.0.0.1:${{ services.gateway.port }}\"",
    ),
    (
        "steps.log",
        "A log check: the lines of a `file` or a `command`'s output (`tail: N`, `follow: DURATION`); `expect.absent` regexes no line may match, `expect.present` entries (a regex, or `json` fields) some line must match.",
        "the last 10000 lines",
        "log: { file: logs/audit.log, tail: 100 }\nexpect:\n  absent: \"(?i)error|critical\"\n  present: [ { json: { event: blob_download, actor: admin } } ]",
    ),
    (
        "steps.file",
        "A file check: files read in order as one stream (ranged downloads joined); asserts `size`, `sha256`, `body`, `json`.",
        "-",
        "file: [downloads/half.bin, downloads/resume.bin]\nexpect: { sha256: \"${{ steps.upload.outputs.sha256 }}\" }",
    ),
    (
        "steps.prometheus",
        "A Prometheus check: a PromQL `query` against the server at `url`. It goes to `/api/v1/query`, or to `/api/v1/query_range` over the last `range`, every `step`, with `headers`, `auth` (bearer, basic) and `timeout`. `expect` is a condition on every value (`\"< 0.01\"`, `\"== 1\"`) or `value`, `series` (how many), `labels`; no series or NaN is no data, never a pass. In a `watch`, a measurement source. See docs/bake.md.",
        "instant query; expects at least one series; timeout 10s; step range/60, at least 1s",
        "prometheus:\n  url: \"${{ vars.prometheus }}\"\n  query: 'demo_build_info{version=\"${{ release.version }}\"}'\nexpect: \"== 1\"\nretry: { attempts: 30, interval: 1s }",
    ),
    (
        "steps.expect",
        "What a check asserts; every assertion is evaluated and recorded with expected and actual: `status`, `headers`, `json` (JSONPath: matcher), `body`, `body_len`, `sha256`, `duration`, ... Matchers: a value, a list, `2xx`, `contains`, `matches`, `exists`, `count`, `length`, `<` `<=` `>` `>=` `==` `!=`, `not`.",
        "a 2xx status (http), exit code 0 (command), open (tcp), at least one series (prometheus)",
        "expect:\n  status: 206\n  headers: { content-range: { matches: \"^bytes 0-\" } }\n  json: { \"$.files[*]\": { count: { \">=\": 1 } } }\n  duration: \"< 2s\"",
    ),
    (
        "steps.capture",
        "Values a check keeps as outputs (`steps.ID.outputs.NAME`): a JSONPath, `{ header: NAME }`, `{ regex: RE }`, `{ sha256: body }` or `{ sha256: sent }`; `secret: true` masks the value everywhere.",
        "none",
        "capture:\n  blob_id: \"$.blob_id\"\n  token: { json: \"$.access_token\", secret: true }",
    ),
    (
        "steps.retry",
        "Run a failing check again: `attempts` in all, `interval` apart (the step's `timeout` bounds them all). Health waits poll the same way.",
        "1 attempt; interval 1s",
        "retry: { attempts: 30, interval: 1s }",
    ),
    (
        "steps.until",
        "Poll a check until these assertions hold (same keys as `expect`), then evaluate `expect` once. Needs `retry`.",
        "none",
        "until: { json: { \"$.state\": done } }\nretry: { attempts: 60, interval: 1s }",
    ),
    (
        "steps.repeat",
        "Send an http check's request N times, `concurrency` at a time; every answer must pass `expect`.",
        "1; concurrency 1",
        "repeat: 1000\nconcurrency: 64",
    ),
    (
        "steps.timeout",
        "Kill the step's process group after this long; the step fails.",
        "none",
        "timeout: 5m",
    ),
    (
        "steps.retries",
        "Run a failed step again up to N more times, `retry_delay` apart.",
        "0 (retry_delay 1s)",
        "retries: 3",
    ),
    (
        "steps.env",
        "Extra environment variables for the step's command.",
        "none",
        "env: { DATABASE_URL: \"${{ secrets.DATABASE_URL }}\" }",
    ),
    (
        "steps.cwd",
        "The working directory, relative to the plan.",
        "the plan directory",
        "cwd: frontend",
    ),
    (
        "steps.when",
        "Run the step only when the expression is true (`==`, `!=`, `!`, `&&`, `||`).",
        "always",
        "when: env.RUN_MIGRATIONS == 'true'",
    ),
    (
        "steps.continue_on_error",
        "A failure of this step does not stop the run.",
        "false",
        "continue_on_error: true",
    ),
    (
        "steps.rollback",
        "A command that undoes the step; runs, newest first, when a later step fails.",
        "none",
        "rollback: ./migrate down 1",
    ),
    (
        "steps.gate",
        "A gate: a step that checks and changes nothing (`git`, `command`, `secrets`, `env`, `config`, `checklist`, `window`). A failed gate stops the run before anything changes; `stagegate check ENV` runs only the gates. See docs/gates.md.",
        "-",
        "- gate: git\n  branch: [main]\n  clean: true",
    ),
    (
        "steps.load",
        "A load test: the built-in generator sends requests (an `http` check step by `check: ID`, or a `scenario` of several with `setup` and captures) under a closed (`vus` with `requests` or `duration`) or open (`rate`, `duration`, `max_in_flight`) model. Its `slo` thresholds gate the deploy: a failed one rolls it back. See docs/load.md.",
        "-",
        "- load:\n    vus: 10\n    requests: 100\n    check: download\n    slo: [\"p95 < 2s\", \"error_rate < 5%\"]",
    ),
    (
        "load.slo",
        "Thresholds judged on the load test's figures: `p95 < 500ms`, `error_rate < 1%`, `rps >= 100`, `checks >= 99.9%`, `status_5xx == 0`, `isolation_violations == 0`, one request's `p95[login] < 300ms`, or against the step's last passing run, `p95 <= +10% vs last_pass`.",
        "none",
        "slo: [\"p95 < 500ms\", \"p95 <= +10% vs last_pass\"]",
    ),
    (
        "load.abort",
        "Rules that stop the load test early and fail the step: `error_rate > 5% over 10s`, `p99 > 2s`.",
        "none",
        "abort: [\"error_rate > 5% over 10s\"]",
    ),
    (
        "load.users",
        "A CSV (header row) or JSON array of users, relative to the plan: virtual user i takes row i, whose values are `${{ vu.COLUMN }}` in the load step's requests.",
        "none",
        "users: users.csv",
    ),
    (
        "load.setup",
        "Requests each virtual user sends once before its first iteration (a login); their captures become the user's `${{ vu.NAME }}`.",
        "none",
        "setup:\n  - name: login\n    http: { method: POST, url: \"${{ vars.base }}/login\", json: { user: \"${{ vu.email }}\" } }\n    capture: { token: \"$.token\" }",
    ),
    (
        "load.isolation",
        "Columns of the users file whose values no other user may ever see in a response; violations are counted with an example (`isolation_violations == 0`).",
        "none",
        "isolation: [id, email]",
    ),
    (
        "steps.watch",
        "A bake: the measurements of `measure` sampled every `every` for `for`. Each sample is judged pass, fail, inconclusive, no data or error. One failure more than `failure_limit` fails it (the deploy rolls back), as do more than `consecutive_error_limit` source errors in a row; one inconclusive or no-data sample more than `inconclusive_limit` ends the run awaiting a decision (exit 7; `stagegate decide N --pass|--fail --reason ...`). Otherwise it passes when the window ends. See docs/bake.md.",
        "every 30s (at least 100ms); failure_limit 0, inconclusive_limit 0, consecutive_error_limit 4, no_data inconclusive",
        "- id: bake\n  watch:\n    for: 24h\n    every: 30s\n    inconclusive_limit: 2\n    measure:\n      - name: error rate\n        prometheus: { url: \"${{ vars.prometheus }}\", query: \"sum(rate(http_requests_total{status=\\\"5xx\\\"}[5m])) / sum(rate(http_requests_total[5m]))\" }\n        pass: \"< 0.01\"\n        fail: \"> 0.05\"\n        sustained: 10m",
    ),
    (
        "watch.measure",
        "The measurements of a watch (1 to 100). Each has a `name` and one source, `prometheus` or a check kind (`http`, `command`, `tcp`, `log`, `file`). A `prometheus` one is judged by `pass` and/or `fail` (both: neither holding is inconclusive) or by `expect`, with `reduce` (last, min, max, avg) for range queries, its own `no_data`, and a `baseline` with relative conditions and `compare`; a check kind by its `expect`. `sustained` counts a failing sample only once the failure has lasted that long.",
        "name: the source's; reduce last; no sustained",
        "measure:\n  - name: hub up\n    prometheus: { url: \"${{ vars.prometheus }}\", query: \"min(erp_hub_up)\" }\n    pass: \"== 1\"\n    fail: \"< 1\"\n  - name: health\n    http: \"${{ services.hub.url }}/health\"",
    ),
    (
        "watch.baseline",
        "What a `prometheus` measurement is compared with. `before`: the same query over the `window` before the deploy (default the watch's `for`, at most 1h); `last_pass`: its samples in the last passing bake of this step. `pass`/`fail` may then be relative to the baseline's median (`\"> +50% vs baseline\"`), and `compare` tests the bake's samples against it. Without a baseline (the first deploy), samples and `compare` count as `no_baseline` says.",
        "none; no_baseline inconclusive",
        "baseline: { from: before, window: 1h }\nfail: \"< -80% vs baseline\"\nno_baseline: pass",
    ),
    (
        "watch.compare",
        "A Mann-Whitney U test of a measurement's samples against its `baseline`'s, at the window's end. It fails when the difference is significant (p < `alpha`) in the bad `direction` (`increase`, `decrease`, `either`) and the median moved by at least `effect`; with fewer than 3 values on a side it is inconclusive. Needs a `baseline`, and a `pass`, `fail` or `expect` beside it.",
        "direction increase, alpha 0.05, effect 10%",
        "baseline: last_pass\npass: \"< 2\"\ncompare: { direction: increase, alpha: 0.05, effect: 50% }",
    ),
    (
        "watch.no_data",
        "What a sample without data counts as. No series, or only NaN, counts as `inconclusive` (against `inconclusive_limit`), `fail` or `pass`. On the watch for every measurement; on a `prometheus` measurement for that one.",
        "inconclusive",
        "no_data: fail",
    ),
    (
        "steps.migrate",
        "A database migration: the `backup` first, then `up`; when the deploy fails (this step or a later one) the rollback runs `down`, and restores the backup as `restore` says. Each undo is a step of the rollback's record, and the report says what was and was not undone. The step's `env`, `cwd` and `timeout` apply to every command. See docs/migrations.md.",
        "-",
        "- id: migrate\n  env: { DATABASE_URL: \"${{ secrets.DATABASE_URL }}\" }\n  migrate:\n    backup: { postgres: \"${{ secrets.DATABASE_URL }}\" }\n    up: alembic upgrade head\n    down: alembic downgrade 0041\n    restore: on_down_failure",
    ),
    (
        "migrate.backup",
        "Taken before `up`, into the deployment's record (STATE/backups/DEPLOYMENT/STEP.dump, 0600), its size and sha256 recorded: `postgres: URL` runs `pg_dump -Fc` (the URL reaches it in PG* variables, never on a command line), or `command:` writes the file $STAGEGATE_BACKUP and `restore_command:` restores from it. A failed backup fails the step before `up` runs.",
        "none (the migration cannot be restored)",
        "backup: { postgres: \"${{ secrets.DATABASE_URL }}\" }",
    ),
    (
        "migrate.up",
        "The migration: a shell command run like a `run` step's (`sh -c`, templates through variables, $STAGEGATE_OUTPUT for outputs, $STAGEGATE_BACKUP the backup). If it fails, the migration failed partway and is undone like one that passed.",
        "required",
        "up: alembic upgrade head",
    ),
    (
        "migrate.down",
        "Undoes `up`, run by the rollback (newest first with the other undo actions), also after an `up` that failed partway: $STAGEGATE_MIGRATE_UP says `succeeded` or `failed`. Write it to reach a named revision, not one step back.",
        "none",
        "down: alembic downgrade 0041",
    ),
    (
        "migrate.restore",
        "When the rollback restores the backup: `never`; `on_down_failure`, when `down` fails or there is none; `always`, instead of `down`. A PostgreSQL restore is one transaction: it drops the database's objects and restores the backup's (pg_restore --clean --if-exists), so objects the migration made are gone too, and data written since the backup is lost.",
        "never",
        "restore: on_down_failure",
    ),
    (
        "steps.allow_override",
        "A failed gate with `allow_override: true` passes with `--override \"justification\"`; who, when and why are recorded and shown in history and reports.",
        "false",
        "- gate: window\n  allow: [{ days: tue-thu, hours: \"10:00-14:00\" }]\n  allow_override: true",
    ),
    (
        "gate.git",
        "The branch (`branch`), a clean tree (`clean`), HEAD pushed to its upstream (`pushed`), a tag at HEAD (`tag`), HEAD in a branch (`ancestor_of`); `repo` is the repository's directory.",
        "nothing checked until asked",
        "- gate: git\n  branch: [main, \"release/*\"]\n  clean: true\n  pushed: true\n  tag: \"v*\"\n  ancestor_of: main",
    ),
    (
        "gate.command",
        "A command (`command`) whose exit code (`expect.exit`) and output (`expect.output_contains`, `output_lacks`, `output_matches`) are asserted; `timeout` kills it.",
        "exit code 0",
        "- gate: command\n  command: ./scripts/ci-status.sh\n  expect: { output_contains: green }",
    ),
    (
        "gate.secrets",
        "Required names (`require`), forbidden names (`forbid`, patterns) and value shapes (`forbid_values`), narrowed by `only`, read `from` the environment, dotenv files or a command's JSON; `drift` compares declared names with other environments. Values are never shown, only fingerprints.",
        "from the environment and the environment's dotenv file",
        "- gate: secrets\n  require: [ALPACA_PAPER_API_KEY]\n  forbid: [\"*_LIVE_*\"]\n  forbid_values: [stripe_live_key, aws_access_key_id]",
    ),
    (
        "gate.env",
        "Values that must be set (`expect`), read `from` the environment, a dotenv file or a service's JSON config endpoint (`url`; keys are then JSONPaths).",
        "from the environment",
        "- gate: env\n  expect: { DRY_RUN: \"true\", ENVIRONMENT: staging }",
    ),
    (
        "gate.config",
        "Lint `files` (dotenv, YAML, JSON, TOML) for URLs to `forbid_hosts`, plain http (`require_https`), `forbid_values` such as DEBUG=true and `forbid_patterns`; findings name file:line.",
        "-",
        "- gate: config\n  files: [config/staging.env]\n  forbid_hosts: [localhost, 127.0.0.1, 0.0.0.0]",
    ),
    (
        "gate.checklist",
        "`items` a person acknowledges: asked at a terminal, or `--ack ITEM` / `--ack-all --as NAME` in CI; recorded with who and when.",
        "-",
        "- gate: checklist\n  items: [Database backup completed, Rollback plan reviewed]",
    ),
    (
        "gate.window",
        "Deploy windows (`allow`: days and hours) and freezes (`freeze`: dates with a reason) in a `timezone`; outside, the gate says when the next window opens.",
        "timezone UTC, always open outside freezes",
        "- gate: window\n  timezone: Europe/London\n  allow: [{ days: tue-thu, hours: \"10:00-14:00\" }]",
    ),
    (
        "on_failure",
        "What a failed step does: `rollback` undoes what ran, newest first; `stop` leaves it.",
        "rollback",
        "on_failure: stop",
    ),
    (
        "state.path",
        "The SQLite state store. `--state` overrides it.",
        ".stagegate/state.db beside the plan",
        "state: { path: /var/lib/stagegate/state.db }",
    ),
    (
        "state.url",
        "A PostgreSQL state store instead of the SQLite file, for runs from several machines. `--state postgresql://...` (or STAGEGATE_STATE) overrides it; leave the password out (PGPASSWORD, ~/.pgpass).",
        "none: the SQLite file",
        "state: { url: \"postgresql://stagegate@db.internal:5432/stagegate\" }",
    ),
    // Last, so that `explain timeout` still finds the step's.
    (
        "services.timeout",
        "kubernetes: how long the rollout may take before the deploy fails (and rolls back).",
        "5m",
        "timeout: 10m",
    ),
];

pub fn explain(key: Option<&str>) -> CmdResult {
    let Some(key) = key else {
        println!("plan fields (stagegate explain KEY for one):");
        for (k, meaning, _, _) in FIELDS {
            println!(
                "  {k:<24} {}",
                meaning.split(". ").next().unwrap_or(meaning)
            );
        }
        return Ok(exit::SUCCESS);
    };
    let norm = key
        .trim()
        .trim_start_matches("stages.")
        .replace("step.", "steps.");
    match FIELDS.iter().find(|(k, ..)| {
        *k == norm
            || k.rsplit('.').next() == Some(norm.as_str())
                && !FIELDS.iter().any(|(x, ..)| *x == norm)
    }) {
        Some((k, meaning, default, example)) => {
            println!("{k}\n\n{meaning}\n\ndefault: {default}\n\nexample:\n");
            for l in example.lines() {
                println!("    {l}");
            }
            Ok(exit::SUCCESS)
        }
        None => {
            let hint =
                stagegate_plan::diagnostic::did_you_mean(&norm, FIELDS.iter().map(|(k, ..)| *k))
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| "`stagegate explain` lists every field".into());
            Err(Failure::invalid(format!(
                "error: unknown plan field `{key}`: {hint}"
            )))
        }
    }
}
