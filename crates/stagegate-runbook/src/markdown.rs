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
    /// A code block; `line` is the line of its first content line. `step`: its info string
    /// says `step` after the language (```` ```bash step ````, as `stagegate doc` writes a
    /// `run` step): the block is one step, read whole.
    Code {
        lang: String,
        body: String,
        line: usize,
        step: bool,
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
    let mut code: Option<(String, String, usize, bool)> = None;

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
                let (lang, first, step) = match kind {
                    CodeBlockKind::Fenced(info) => {
                        let mut words = info.split_whitespace();
                        let lang = words.next().unwrap_or("").to_lowercase();
                        (lang, line + 1, words.any(|w| w == "step"))
                    }
                    CodeBlockKind::Indented => (String::new(), line, false),
                };
                code = Some((lang, String::new(), first, step));
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some((lang, body, line, step)) = code.take() {
                    out.push(Block::Code {
                        lang,
                        body,
                        line,
                        step,
                    });
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
                if let Some((_, body, _, _)) = code.as_mut() {
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

/// A fence for `body`: backticks, one more than the longest run of them in it (at least
/// three), so no line of the body closes the block, in any Markdown reader.
pub fn fence(body: &str) -> String {
    "`".repeat((longest_backticks(body) + 1).max(3))
}

fn longest_backticks(text: &str) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

/// An inline code span for `text`: its delimiters longer than any run of backticks in it,
/// padded with a space when it starts or ends with one.
pub fn code_span(text: &str) -> String {
    let ticks = "`".repeat(longest_backticks(text) + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{text}{pad}{ticks}")
}

/// Text that reads as itself in Markdown: characters that could start markup are
/// backslash-escaped (CommonMark allows it for any ASCII punctuation).
pub fn escape_inline(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        let leading = i == 0 && "#+-=>0123456789".contains(c);
        if "\\`*_[]<>&|~!".contains(c) || leading && !c.is_ascii_digit() {
            out.push('\\');
        }
        out.push(c);
    }
    // `1. item` at the start would be a list: escape its dot.
    if let Some(rest) = out.find(|c: char| !c.is_ascii_digit())
        && rest > 0
        && matches!(&out[rest..rest + 1], "." | ")")
    {
        out.insert(rest, '\\');
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
                    line: 14,
                    step: false
                },
            ]
        );
    }

    #[test]
    fn fences_and_spans_are_longer_than_the_backticks_inside() {
        assert_eq!(fence("echo hi\n"), "```");
        assert_eq!(fence("```text\nx\n```\n"), "````");
        assert_eq!(fence("printf '`````'\n"), "``````");
        assert_eq!(code_span("a"), "`a`");
        assert_eq!(code_span("a `b` c"), "``a `b` c``");
        assert_eq!(code_span("`x"), "`` `x ``");
    }

    /// Escaped text reads back as itself: as a task item, and its code block bodies whole.
    #[test]
    fn escaped_text_and_fenced_code_read_back_as_written() {
        for text in [
            "# not a heading",
            "1. not a list",
            "- not a list",
            "a *b* _c_ `d` [e](f) <g> &amp; | ~h~ \\ !",
            "plain",
        ] {
            let md = format!("- [ ] {}\n", escape_inline(text));
            assert_eq!(
                blocks(&md),
                [Block::Task {
                    text: text.into(),
                    line: 1
                }],
                "{md}"
            );
        }
        let body = "cat <<'EOF'\n```text\nhi\n```\nEOF\n";
        let f = fence(body);
        let md = format!("{f}bash step\n{body}{f}\n");
        assert_eq!(
            blocks(&md),
            [Block::Code {
                lang: "bash".into(),
                body: body.into(),
                line: 2,
                step: true
            }]
        );
    }
}
