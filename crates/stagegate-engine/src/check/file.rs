//! `file` checks: files read in order as one stream (ranged downloads joined) for their
//! size, sha256 or content.

use std::path::PathBuf;
use std::time::Instant;

use stagegate_plan::{Spanned, Template};
use tokio::io::AsyncReadExt;

use super::body::{BodyNeeds, BodySink};
use super::expect::Observation;
use crate::step::StepCtx;

pub struct Prepared {
    paths: Vec<(String, PathBuf)>,
    needs: BodyNeeds,
}

impl Prepared {
    pub fn new(
        ctx: &StepCtx<'_>,
        files: &[Spanned<Template>],
        needs: BodyNeeds,
    ) -> Result<Self, String> {
        let mut paths = Vec::new();
        for f in files {
            let rel = ctx
                .scope
                .render(&f.value)
                .map_err(|e| format!("file: {e}"))?;
            paths.push((rel.clone(), ctx.plan.dir.join(rel)));
        }
        Ok(Self { paths, needs })
    }

    pub fn target(&self) -> String {
        let names: Vec<&str> = self.paths.iter().map(|(r, _)| r.as_str()).collect();
        format!("file {}", names.join(" + "))
    }

    pub async fn read(&self) -> Result<Observation, String> {
        let started = Instant::now();
        let mut sink = BodySink::new(self.needs);
        let mut buf = vec![0u8; 256 * 1024];
        for (rel, path) in &self.paths {
            let mut f = tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("cannot read {rel}: {e}"))?;
            loop {
                let n = f
                    .read(&mut buf)
                    .await
                    .map_err(|e| format!("cannot read {rel}: {e}"))?;
                if n == 0 {
                    break;
                }
                sink.push(&buf[..n]).await?;
            }
        }
        Ok(Observation {
            series: Vec::new(),
            body: Some(sink.finish().await?),
            duration: started.elapsed(),
            ..Default::default()
        })
    }
}
