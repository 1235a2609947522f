//! Markdown is indexed as written: its headings, lists and code are already readable text,
//! and the `#` and backticks cost little in a chunk. Only HTML comments go, since they are
//! invisible to a reader (often editor notes or generated-file banners); inside fenced code
//! blocks a `<!--` is code and stays.

/// The Markdown source without its HTML comments (outside fenced code blocks).
pub(super) fn visible(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    // The fence that opened the current code block (its character and length), if inside one.
    let mut fence: Option<(char, usize)> = None;
    let mut in_comment = false;
    for line in src.split_inclusive('\n') {
        if !in_comment {
            let trimmed = line.trim_start();
            let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
            if let Some(m) = marker {
                let run = trimmed.chars().take_while(|c| *c == m).count();
                if run >= 3 {
                    match fence {
                        // A closing fence uses the same character, at least as many times.
                        Some((open, len)) if open == m && run >= len => fence = None,
                        Some(_) => {}
                        None => fence = Some((m, run)),
                    }
                    out.push_str(line);
                    continue;
                }
            }
            if fence.is_some() {
                out.push_str(line);
                continue;
            }
        }
        let mut rest = line;
        loop {
            if in_comment {
                match rest.find("-->") {
                    Some(end) => {
                        rest = &rest[end + 3..];
                        in_comment = false;
                    }
                    // The comment goes on past this line; an unterminated one hides the rest
                    // of the file, as it would in a renderer.
                    None => break,
                }
            } else {
                match rest.find("<!--") {
                    Some(start) => {
                        out.push_str(&rest[..start]);
                        rest = &rest[start + 4..];
                        in_comment = true;
                    }
                    None => {
                        out.push_str(rest);
                        break;
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::visible;

    #[test]
    fn comments_go_code_stays() {
        let md = "# Title <!-- note -->\n<!--\nmulti\n-->\ntext\n```html\n<!-- kept -->\n```\nend";
        assert_eq!(
            visible(md),
            "# Title \n\ntext\n```html\n<!-- kept -->\n```\nend"
        );
    }
}
