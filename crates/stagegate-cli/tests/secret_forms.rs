//! Secrets in stagegate's own encodings (a URL query, a basic-auth header, JSON) and
//! multi-line secrets are masked on every output path; the state files are private. The
//! real binary against a loopback server that echoes what it received.

mod common;
use std::os::unix::fs::PermissionsExt;

use common::{Project, REPORT_FILES, assert_nowhere, response, serve, walk, with_reports};

/// A secret with characters every encoding changes, on two lines.
const SECRET: &str = "s3cr&t pa=ss/\"word\"\nsecond-line-of-key";

/// Every form of SECRET that must not appear anywhere.
fn forms() -> Vec<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    vec![
        SECRET.to_string(),
        "second-line-of-key".to_string(),
        "s3cr&t pa=ss/\"word\"".to_string(),
        url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect(),
        "s3cr%26t%20pa%3Dss%2F%22word%22%0Asecond-line-of-key".to_string(),
        serde_json::to_string(SECRET)
            .unwrap()
            .trim_matches('"')
            .to_string(),
        b64.encode(format!("admin:{SECRET}")),
        b64.encode(SECRET),
    ]
}

#[test]
fn encoded_and_multi_line_secrets_are_masked_everywhere_and_files_are_private() {
    // The server answers with what it got: the request line and its headers, as JSON.
    let port = serve(|head, _| {
        let body = serde_json::json!({ "request": head }).to_string();
        response("200 OK", "application/json", body.as_bytes())
    });
    let p = Project::new(&format!(
        r#"project: demo
environments:
  staging:
    secrets: {{ require: [API_KEY] }}
stages:
  s:
    - id: query
      http:
        url: "http://127.0.0.1:{port}/search"
        query: {{ key: "${{{{ secrets.API_KEY }}}}", q: "x" }}
      expect:
        status: 200
        json: {{ "$.request": {{ contains: "nothing-like-this" }} }}
      continue_on_error: true
    - id: basic
      http:
        url: "http://127.0.0.1:{port}/basic"
        auth: {{ basic: {{ user: admin, password: "${{{{ secrets.API_KEY }}}}" }} }}
      capture: {{ echoed: "$.request" }}
    - id: echo
      run: |
        printf '%s\n' ${{{{ secrets.API_KEY }}}}
        printf '%s\n' ${{{{ steps.basic.outputs.echoed }}}}
        printf '%s\n' ${{{{ secrets.API_KEY }}}} | sed 's/"/\\"/g; s/$/\\n/' | tr -d '\n'; echo
"#
    ));
    // Double quotes in a dotenv file understand \n and \".
    p.write(
        ".env.staging",
        r#"API_KEY="s3cr&t pa=ss/\"word\"\nsecond-line-of-key"
"#,
    );
    let o = p.run(&with_reports(&["deploy", "staging"]));
    o.code(0);
    let forms = forms();
    let refs: Vec<&str> = forms.iter().map(String::as_str).collect();
    for f in &refs {
        assert!(
            !o.stderr.contains(f),
            "the terminal shows {f:?}:\n{}",
            o.stderr
        );
    }
    let read = assert_nowhere(&p, &refs, "staging");
    assert!(read >= 3, "only {read} files under .stagegate");

    // Private files: the state directory and everything stagegate wrote in it, the reports.
    let state = p.path().join(".stagegate");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700, "{}", state.display());
    assert_eq!(mode(&state.join("logs")), 0o700);
    assert_eq!(mode(&state.join("logs/1")), 0o700);
    for f in walk(&state) {
        let m = mode(&f);
        assert_eq!(m & 0o077, 0, "{} is {m:o}", f.display());
    }
    for f in REPORT_FILES {
        assert_eq!(mode(&p.path().join(f)), 0o600, "{f}");
    }
}
