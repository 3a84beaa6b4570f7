//! `${{ ... }}` templates and the small expression language used inside them and in `when:`.
//!
//! An expression is a reference (`vars.base`, `secrets.TOKEN`, `env.HOME`, `release.version`,
//! `release.sha`, `steps.ID.outputs.NAME`, `services.NAME.url`, `environment.name`, and in
//! load steps `vu.NAME`), a quoted
//! literal, or a combination with `==`, `!=`, `!`, `&&`, `||` and parentheses. `||` yields its
//! first truthy operand, so `${{ env.PORT || '8080' }}` is a default value.

use std::fmt;

/// What a reference points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    Var(String),
    Secret(String),
    Env(String),
    ReleaseVersion,
    ReleaseSha,
    StepOutput {
        step: String,
        name: String,
    },
    Service {
        name: String,
        field: ServiceField,
    },
    EnvironmentName,
    Project,
    /// A virtual user's variable in a load step's requests (`vu.NAME`): a column of the
    /// users file or a value captured by an earlier request. It is filled in per user while
    /// the load test runs, so rendering keeps it as `${{ vu.NAME }}`.
    Vu(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceField {
    Url,
    Port,
    Release,
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Var(n) => write!(f, "vars.{n}"),
            Ref::Secret(n) => write!(f, "secrets.{n}"),
            Ref::Env(n) => write!(f, "env.{n}"),
            Ref::ReleaseVersion => write!(f, "release.version"),
            Ref::ReleaseSha => write!(f, "release.sha"),
            Ref::StepOutput { step, name } => write!(f, "steps.{step}.outputs.{name}"),
            Ref::Service { name, field } => {
                let field = match field {
                    ServiceField::Url => "url",
                    ServiceField::Port => "port",
                    ServiceField::Release => "release",
                };
                write!(f, "services.{name}.{field}")
            }
            Ref::EnvironmentName => write!(f, "environment.name"),
            Ref::Project => write!(f, "project"),
            Ref::Vu(n) => write!(f, "vu.{n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Ref(Ref, usize),
    Lit(String),
    Not(Box<Expr>),
    Eq(Box<Expr>, Box<Expr>),
    Ne(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// The expression as text, in one canonical spelling: `env.PORT || '8080'`. Parsing the text
/// again gives the same expression.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = |e: &Expr| match e {
            Expr::Ref(..) | Expr::Lit(_) | Expr::Not(_) => e.to_string(),
            _ => format!("({e})"),
        };
        match self {
            Expr::Ref(r, _) => write!(f, "{r}"),
            Expr::Lit(l) => write!(f, "'{l}'"),
            Expr::Not(x) => write!(f, "!{}", inner(x)),
            Expr::Eq(a, b) => write!(f, "{} == {}", inner(a), inner(b)),
            Expr::Ne(a, b) => write!(f, "{} != {}", inner(a), inner(b)),
            Expr::And(a, b) => write!(f, "{} && {}", inner(a), inner(b)),
            Expr::Or(a, b) => write!(f, "{} || {}", inner(a), inner(b)),
        }
    }
}

impl Expr {
    /// Every reference with its byte offset in the text the expression was parsed from.
    pub fn refs(&self, out: &mut Vec<(Ref, usize)>) {
        match self {
            Expr::Ref(r, at) => out.push((r.clone(), *at)),
            Expr::Lit(_) => {}
            Expr::Not(e) => e.refs(out),
            Expr::Eq(a, b) | Expr::Ne(a, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                a.refs(out);
                b.refs(out);
            }
        }
    }

    pub fn eval(
        &self,
        resolve: &mut dyn FnMut(&Ref) -> Result<String, RenderError>,
    ) -> Result<String, RenderError> {
        Ok(match self {
            Expr::Ref(r, _) => resolve(r)?,
            Expr::Lit(s) => s.clone(),
            Expr::Not(e) => bool_str(!truthy(&e.eval(resolve)?)),
            Expr::Eq(a, b) => bool_str(a.eval(resolve)? == b.eval(resolve)?),
            Expr::Ne(a, b) => bool_str(a.eval(resolve)? != b.eval(resolve)?),
            Expr::And(a, b) => {
                let l = a.eval(resolve)?;
                if truthy(&l) { b.eval(resolve)? } else { l }
            }
            Expr::Or(a, b) => {
                // A missing value on the left falls through to the default on the right.
                match a.eval(resolve) {
                    Ok(l) if truthy(&l) => l,
                    _ => b.eval(resolve)?,
                }
            }
        })
    }
}

fn bool_str(b: bool) -> String {
    if b { "true".into() } else { "false".into() }
}

/// Empty, `false` and `0` are false; everything else is true.
pub fn truthy(s: &str) -> bool {
    !matches!(s.trim(), "" | "false" | "0")
}

/// Why a template has no value: a reference that cannot be resolved now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("`vars.{0}` is not defined")]
    UndefinedVar(String),
    #[error("secret `{name}` has no value in environment `{environment}`")]
    SecretUnset { name: String, environment: String },
    #[error(
        "environment variable `{0}` is not set (write `${{{{ env.{0} || 'default' }}}}` for a default)"
    )]
    EnvUnset(String),
    #[error("step `{0}` has not run, so it has no outputs")]
    StepNotRun(String),
    #[error("step `{step}` has no output `{name}` (it wrote: {written})")]
    NoSuchOutput {
        step: String,
        name: String,
        /// The outputs it did write, comma-separated, or `nothing`.
        written: String,
    },
    #[error("service `{0}` is not running yet: deploy it in an earlier step")]
    ServiceNotRunning(String),
    /// A resolver of its own (the load generator's, a test's) said why.
    #[error("{0}")]
    Other(String),
}

impl From<String> for RenderError {
    fn from(s: String) -> Self {
        RenderError::Other(s)
    }
}

impl From<RenderError> for String {
    fn from(e: RenderError) -> Self {
        e.to_string()
    }
}

/// A parse error with its byte offset in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub offset: usize,
    pub message: String,
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    base: usize,
    /// How many `(` and `!` enclose the current position.
    depth: usize,
}

/// The deepest nesting of `(` and `!` an expression may have: far above any real condition,
/// far below what would overflow the stack of the parser, the evaluator or the drop.
pub const MAX_EXPR_DEPTH: usize = 64;

const ROOTS: &[&str] = &[
    "vars",
    "secrets",
    "env",
    "release",
    "steps",
    "services",
    "environment",
    "project",
    "vu",
];

impl<'a> Parser<'a> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ExprError> {
        Err(ExprError {
            offset: self.base + self.pos,
            message: message.into(),
        })
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.text[self.pos..]
            .chars()
            .next()
            .filter(|c| c.is_whitespace())
        {
            self.pos += c.len_utf8();
        }
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.skip_ws();
        if self.text[self.pos..].starts_with(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.cmp()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.cmp()?));
        }
        Ok(left)
    }

    fn cmp(&mut self) -> Result<Expr, ExprError> {
        let left = self.unary()?;
        if self.eat("==") {
            return Ok(Expr::Eq(Box::new(left), Box::new(self.unary()?)));
        }
        if self.eat("!=") {
            return Ok(Expr::Ne(Box::new(left), Box::new(self.unary()?)));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.eat("!") {
            self.deeper()?;
            let e = Expr::Not(Box::new(self.unary()?));
            self.depth -= 1;
            return Ok(e);
        }
        self.primary()
    }

    fn deeper(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_EXPR_DEPTH {
            return self.err(format!(
                "the expression nests deeper than {MAX_EXPR_DEPTH} levels of `(` and `!`; simplify it"
            ));
        }
        Ok(())
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        self.skip_ws();
        let rest = &self.text[self.pos..];
        if rest.starts_with('(') {
            self.pos += 1;
            self.deeper()?;
            let e = self.or()?;
            if !self.eat(")") {
                return self.err("expected `)`");
            }
            self.depth -= 1;
            return Ok(e);
        }
        if let Some(q) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') {
            let body = &rest[1..];
            let Some(end) = body.find(q) else {
                return self.err("unterminated string literal");
            };
            let lit = body[..end].to_string();
            self.pos += end + 2;
            return Ok(Expr::Lit(lit));
        }
        let len = rest
            .find(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .unwrap_or(rest.len());
        if len == 0 {
            return if rest.is_empty() {
                self.err("expected a reference or a quoted string, found the end")
            } else {
                self.err(format!(
                    "unexpected `{}`",
                    rest.chars().next().unwrap_or(' ')
                ))
            };
        }
        let word = &rest[..len];
        let at = self.base + self.pos;
        self.pos += len;
        if word == "true" || word == "false" || word.parse::<f64>().is_ok() {
            return Ok(Expr::Lit(word.to_string()));
        }
        parse_ref(word)
            .map(|r| Expr::Ref(r, at))
            .map_err(|message| ExprError {
                offset: at,
                message,
            })
    }
}

fn parse_ref(word: &str) -> Result<Ref, String> {
    let parts: Vec<&str> = word.split('.').collect();
    let name = |i: usize| -> Result<String, String> {
        parts
            .get(i)
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string())
            .ok_or_else(|| format!("`{word}` is incomplete"))
    };
    let exact = |n: usize, r: Ref| -> Result<Ref, String> {
        if parts.len() == n {
            Ok(r)
        } else {
            Err(format!("`{word}` has too many parts"))
        }
    };
    match parts[0] {
        "vars" => exact(2, Ref::Var(name(1)?)),
        "secrets" => exact(2, Ref::Secret(name(1)?)),
        "env" => exact(2, Ref::Env(name(1)?)),
        "project" => exact(1, Ref::Project),
        "vu" => exact(2, Ref::Vu(name(1)?)),
        "release" => match name(1)?.as_str() {
            "version" => exact(2, Ref::ReleaseVersion),
            "sha" => exact(2, Ref::ReleaseSha),
            other => Err(format!(
                "`release.{other}` is not known: use `release.version` or `release.sha`"
            )),
        },
        "environment" => match name(1)?.as_str() {
            "name" => exact(2, Ref::EnvironmentName),
            other => Err(format!(
                "`environment.{other}` is not known: use `environment.name`"
            )),
        },
        "steps" => {
            let step = name(1)?;
            if parts.get(2) != Some(&"outputs") {
                return Err(format!("write `steps.{step}.outputs.NAME`"));
            }
            exact(
                4,
                Ref::StepOutput {
                    step,
                    name: name(3)?,
                },
            )
        }
        "services" => {
            let svc = name(1)?;
            let field = match name(2)?.as_str() {
                "url" => ServiceField::Url,
                "port" => ServiceField::Port,
                "release" => ServiceField::Release,
                other => {
                    return Err(format!(
                        "`services.{svc}.{other}` is not known: use url, port or release"
                    ));
                }
            };
            exact(3, Ref::Service { name: svc, field })
        }
        other => {
            let hint = crate::diagnostic::did_you_mean(other, ROOTS.iter().copied())
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_else(|| format!("; references start with one of: {}", ROOTS.join(", ")));
            Err(format!("unknown reference `{word}`{hint}"))
        }
    }
}

/// Parses a whole expression (a `when:` condition).
pub fn parse_expr(text: &str, base: usize) -> Result<Expr, ExprError> {
    let mut p = Parser {
        text,
        pos: 0,
        base,
        depth: 0,
    };
    let e = p.or()?;
    p.skip_ws();
    if p.pos < text.len() {
        return p.err(format!("unexpected `{}`", &text[p.pos..]));
    }
    Ok(e)
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Lit(String),
    Expr(Expr),
}

/// A string with `${{ }}` holes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    pub parts: Vec<Part>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, ExprError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(start) = rest.find("${{") {
            if start > 0 {
                parts.push(Part::Lit(rest[..start].to_string()));
            }
            let inner_start = start + 3;
            let Some(end) = rest[inner_start..].find("}}") else {
                return Err(ExprError {
                    offset: offset + start,
                    message: "`${{` without a closing `}}`".into(),
                });
            };
            let inner = &rest[inner_start..inner_start + end];
            parts.push(Part::Expr(parse_expr(inner, offset + inner_start)?));
            let consumed = inner_start + end + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// The template as text, nothing evaluated: `${{ vars.base }}/health` (no secret can
    /// show, since no reference is resolved). `Template::parse` of the text gives it back.
    pub fn written(&self) -> String {
        let mut s = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => s.push_str(l),
                Part::Expr(e) => s.push_str(&format!("${{{{ {e} }}}}")),
            }
        }
        s
    }

    pub fn literal(text: &str) -> Self {
        Self {
            parts: vec![Part::Lit(text.to_string())],
        }
    }

    pub fn refs(&self) -> Vec<(Ref, usize)> {
        let mut out = Vec::new();
        for p in &self.parts {
            if let Part::Expr(e) = p {
                e.refs(&mut out);
            }
        }
        out
    }

    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    pub fn render(
        &self,
        resolve: &mut dyn FnMut(&Ref) -> Result<String, RenderError>,
    ) -> Result<String, RenderError> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Expr(e) => out.push_str(&e.eval(resolve)?),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str) -> Result<String, String> {
        Template::parse(t)
            .unwrap()
            .render(&mut |r| match r {
                Ref::Var(n) if n == "base" => Ok("http://127.0.0.1:8000".into()),
                Ref::ReleaseVersion => Ok("1.2.3".into()),
                other => Err(format!("{other} is not set").into()),
            })
            .map_err(String::from)
    }

    #[test]
    fn renders_references_and_defaults() {
        assert_eq!(
            render("${{ vars.base }}/health?v=${{release.version}}").unwrap(),
            "http://127.0.0.1:8000/health?v=1.2.3"
        );
        assert_eq!(render("${{ env.PORT || '8080' }}").unwrap(), "8080");
        assert_eq!(render("${{ release.version == '1.2.3' }}").unwrap(), "true");
        assert_eq!(
            render("${{ !(release.version != '1.2.3') && 'yes' }}").unwrap(),
            "yes"
        );
        assert!(
            render("${{ env.MISSING }}")
                .unwrap_err()
                .contains("env.MISSING")
        );
    }

    #[test]
    fn reports_errors_with_offsets() {
        let e = Template::parse("x ${{ varz.base }}").unwrap_err();
        assert_eq!(e.offset, 6);
        assert!(e.message.contains("did you mean `vars`"), "{}", e.message);
        assert!(
            Template::parse("${{ vars.a")
                .unwrap_err()
                .message
                .contains("closing")
        );
        assert!(Template::parse("${{ steps.a.output.b }}").is_err());
        assert!(Template::parse("${{ 'open }}").is_err());
    }

    #[test]
    fn collects_step_output_refs() {
        let t = Template::parse("${{ steps.build.outputs.digest }}").unwrap();
        assert_eq!(
            t.refs()[0].0,
            Ref::StepOutput {
                step: "build".into(),
                name: "digest".into()
            }
        );
    }
}
