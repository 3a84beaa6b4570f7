//! The runbook's Markdown as a flat list of [`Block`]s, each with its source line:
//! headings, fenced code, checklist items, and text (paragraphs and list items).

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Heading {
        level: u8,
        text: String,
        line: usize,
    },
    /// A code block; `line` is the line of its first content line.
    Code {
        lang: String,
        body: String,
        line: usize,
    },
    /// A `- [ ] item` (or `- [x] item`).
    Task { text: String, line: usize },
    /// A paragraph, or the text of a list item (`item` is true).
    Text {
        text: String,
        line: usize,
        item: bool,
    },
}

struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self(starts)
    }

    /// The 1-based line of a byte offset.
    fn of(&self, offset: usize) -> usize {
        self.0.partition_point(|&s| s <= offset)
    }
}

#[derive(Default)]
struct ItemBuf {
    text: String,
    line: usize,
    task: bool,
}

pub fn blocks(text: &str) -> Vec<Block> {
    let lines = Lines::new(text);
    let mut out = Vec::new();
    let mut items: Vec<ItemBuf> = Vec::new();
    let mut para = String::new();
    let mut para_line = 0;
    let mut heading: Option<(u8, String, usize)> = None;
    let mut code: Option<(String, String, usize)> = None;

    let flush_item = |b: &mut ItemBuf, out: &mut Vec<Block>| {
        let text = b.text.trim().to_string();
        if !text.is_empty() {
            out.push(if b.task {
                Block::Task { text, line: b.line }
            } else {
                Block::Text {
                    text,
                    line: b.line,
                    item: true,
                }
            });
        }
        b.text.clear();
    };

    for (event, range) in Parser::new_ext(text, Options::ENABLE_TASKLISTS).into_offset_iter() {
        let line = lines.of(range.start);
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                heading = Some((level as u8, String::new(), line));
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, text, line)) = heading.take() {
                    out.push(Block::Heading {
                        level,
                        text: text.trim().to_string(),
                        line,
                    });
                }
            }
            Event::Start(Tag::CodeBlock(kind)) => {
                let (lang, first) = match kind {
                    CodeBlockKind::Fenced(info) => (
                        info.split_whitespace().next().unwrap_or("").to_lowercase(),
                        line + 1,
                    ),
                    CodeBlockKind::Indented => (String::new(), line),
                };
                code = Some((lang, String::new(), first));
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some((lang, body, line)) = code.take() {
                    out.push(Block::Code { lang, body, line });
                }
            }
            Event::Start(Tag::Item) => {
                if let Some(parent) = items.last_mut() {
                    flush_item(parent, &mut out);
                }
                items.push(ItemBuf {
                    line,
                    ..Default::default()
                });
            }
            Event::End(TagEnd::Item) => {
                if let Some(mut b) = items.pop() {
                    flush_item(&mut b, &mut out);
                }
            }
            Event::TaskListMarker(_) => {
                if let Some(b) = items.last_mut() {
                    b.task = true;
                }
            }
            Event::Start(Tag::Paragraph) if items.is_empty() => {
                para.clear();
                para_line = line;
            }
            Event::End(TagEnd::Paragraph) if items.is_empty() => {
                let text = para.trim().to_string();
                if !text.is_empty() {
                    out.push(Block::Text {
                        text,
                        line: para_line,
                        item: false,
                    });
                }
                para.clear();
            }
            Event::Code(t) => {
                let piece = format!("`{t}`");
                if let Some((_, h, _)) = heading.as_mut() {
                    h.push_str(&t);
                } else if let Some(b) = items.last_mut() {
                    b.text.push_str(&piece);
                } else {
                    para.push_str(&piece);
                }
            }
            Event::Text(t) | Event::Html(t) | Event::InlineHtml(t) => {
                let piece = t.to_string();
                if let Some((_, body, _)) = code.as_mut() {
                    body.push_str(&t);
                } else if let Some((_, h, _)) = heading.as_mut() {
                    h.push_str(&t);
                } else if let Some(b) = items.last_mut() {
                    b.text.push_str(&piece);
                } else {
                    para.push_str(&piece);
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some(b) = items.last_mut() {
                    b.text.push('\n');
                } else {
                    para.push('\n');
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_code_tasks_and_text_with_lines() {
        let md = "# Title\n\n## Pre-Deployment Checklist\n\n- [ ] Backup done\n- [x] CI green\n\n5. Verify:\n   - [ ] Progress bar updates\n\nSome `X_KEY` text\n\n```bash\nls\n```\n";
        let b = blocks(md);
        assert_eq!(
            b,
            [
                Block::Heading {
                    level: 1,
                    text: "Title".into(),
                    line: 1
                },
                Block::Heading {
                    level: 2,
                    text: "Pre-Deployment Checklist".into(),
                    line: 3
                },
                Block::Task {
                    text: "Backup done".into(),
                    line: 5
                },
                Block::Task {
                    text: "CI green".into(),
                    line: 6
                },
                Block::Text {
                    text: "Verify:".into(),
                    line: 8,
                    item: true
                },
                Block::Task {
                    text: "Progress bar updates".into(),
                    line: 9
                },
                Block::Text {
                    text: "Some `X_KEY` text".into(),
                    line: 11,
                    item: false
                },
                Block::Code {
                    lang: "bash".into(),
                    body: "ls\n".into(),
                    line: 14
                },
            ]
        );
    }
}
