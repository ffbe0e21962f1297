//! The AI analysis is Markdown written by a model, which may repeat
//! whatever the traffic or a prompt injection put in front of it. Before it
//! goes into a mail it is rendered (pulldown-cmark) and then cleaned by a
//! whitelist sanitiser (ammonia): only text formatting, lists, tables,
//! code and links survive; scripts, styles, event handlers, images,
//! frames and `javascript:` URLs never do, and links cannot reach back
//! into the reader's mail client (`rel="noopener noreferrer"`).

use pulldown_cmark::{html, Options, Parser};
use std::collections::HashSet;

/// Tags the analysis may use: what Markdown produces, minus images (a
/// remote image is a read receipt for whoever chose its URL).
const TAGS: &[&str] = &[
    "a",
    "b",
    "blockquote",
    "br",
    "code",
    "del",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "li",
    "ol",
    "p",
    "pre",
    "s",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
    "ul",
];

/// Markdown to HTML that is safe to put inside a mail's HTML part.
pub fn to_safe_html(markdown: &str) -> String {
    let mut rendered = String::with_capacity(markdown.len() * 3 / 2);
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    html::push_html(&mut rendered, Parser::new_ext(markdown, options));
    sanitise(&rendered)
}

/// Cleans HTML down to [`TAGS`] with no attributes but a link's `href`
/// (http, https or mailto) and `title`, and a list's `start`.
pub fn sanitise(html: &str) -> String {
    ammonia::Builder::default()
        .tags(TAGS.iter().copied().collect())
        .generic_attributes(HashSet::new())
        .tag_attributes(
            [("a", ["href", "title"].into()), ("ol", ["start"].into())]
                .into_iter()
                .collect(),
        )
        .url_schemes(["http", "https", "mailto"].into())
        .link_rel(Some("noopener noreferrer"))
        // Dropped with everything inside them, not unwrapped into text.
        .clean_content_tags(["script", "style", "iframe", "object", "template"].into())
        .clean(html)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_rendered() {
        let h = to_safe_html("# Scan\n\n**192.0.2.66** reached `50213` hosts:\n\n- one\n- two\n");
        assert!(h.contains("<h1>Scan</h1>"), "{h}");
        assert!(h.contains("<strong>192.0.2.66</strong>"), "{h}");
        assert!(h.contains("<code>50213</code>"), "{h}");
        assert!(h.contains("<ul>") && h.contains("<li>one</li>"), "{h}");
    }

    #[test]
    fn hostile_markdown_and_html_come_out_harmless() {
        let hostile = concat!(
            "Hello <script>alert(document.cookie)</script> **bold**\n\n",
            "<img src=x onerror=alert(1)>\n\n",
            "<iframe src=\"https://evil.example\"></iframe>\n\n",
            "<style>body{display:none}</style>\n\n",
            "<a href=\"javascript:alert(2)\" onclick=\"alert(3)\">click</a>\n\n",
            "[md link](javascript:alert(4)) and [ok](https://example.org/x)\n\n",
            "![pixel](https://tracker.example/p.png)\n\n",
            "<p style=\"color:red\" onmouseover=\"alert(5)\">styled</p>\n\n",
            "<svg onload=alert(6)><circle/></svg>\n\n",
            "<a href=\"data:text/html;base64,PHNjcmlwdD4=\">data</a>\n",
            "<form action=\"https://evil.example\"><input name=p></form>\n",
        );
        let h = to_safe_html(hostile);
        let lower = h.to_ascii_lowercase();
        for bad in [
            "<script",
            "alert(document",
            "<img",
            "onerror",
            "<iframe",
            "<style",
            "display:none",
            "javascript:",
            "onclick",
            "onmouseover",
            "style=",
            "<svg",
            "onload",
            "data:text",
            "<form",
            "<input",
            "tracker.example",
        ] {
            assert!(!lower.contains(bad), "`{bad}` survived: {h}");
        }
        assert!(h.contains("<strong>bold</strong>"), "{h}");
        assert!(h.contains("styled") && h.contains("click"), "{h}");
        assert!(
            h.contains(r#"<a href="https://example.org/x" rel="noopener noreferrer">ok</a>"#),
            "{h}"
        );
    }
}
