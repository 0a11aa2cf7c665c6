//! Turning a page's bytes into preview fields: charset detection, then OpenGraph tags with
//! fallbacks to `<title>`, meta descriptions, Twitter cards and the largest `<img>`.
//!
//! Pure and blocking: callers run it in `spawn_blocking` on at most `max_page_size` bytes.
//! Only html5ever's tokenizer runs (no tree, no selectors): one linear pass, with the sink
//! switching it into raw-text states for `<title>`, `<script>` and `<style>` as the tree builder
//! would, so tags inside scripts are not mistaken for real ones. A hostile page costs time
//! linear in its (capped) size and memory for the few fields kept.

use std::cell::RefCell;

use encoding_rs::{Encoding, UTF_8, WINDOWS_1252};
use html5ever::{
    TokenizerResult,
    tendril::StrTendril,
    tokenizer::{
        BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
        states::RawKind,
    },
};
use serde_json::{Map, Value};
use url::Url;

/// Most `og:*` properties kept from one page.
const MAX_PROPERTIES: usize = 64;
/// Longest property value kept, in characters.
const MAX_VALUE_CHARS: usize = 2000;
/// Longest description built from body text, in characters.
const MAX_DESCRIPTION_CHARS: usize = 500;
/// `<img>` elements considered for the fallback image.
const MAX_IMAGES: usize = 50;

/// What a page offers for its preview.
#[derive(Debug, Default, PartialEq)]
pub struct Page {
    /// `og:*` properties and fallbacks, without any `og:image*` (the caller adds the stored
    /// copy's).
    pub og: Map<String, Value>,
    /// The image to show, resolved against the page URL.
    pub image: Option<Url>,
    /// A JSON oEmbed endpoint the page advertises.
    pub oembed: Option<Url>,
}

/// Decodes `bytes` by, in order: a byte-order mark, the `Content-Type` charset, a `<meta>`
/// charset in the first 1024 bytes, else UTF-8 if valid, else windows-1252 (what browsers
/// assume for legacy pages).
pub fn decode(bytes: &[u8], content_type: Option<&str>) -> String {
    let declared = Encoding::for_bom(bytes)
        .map(|(encoding, _)| encoding)
        .or_else(|| content_type.and_then(charset_param).and_then(label))
        .or_else(|| meta_charset(bytes.get(..1024).unwrap_or(bytes)).and_then(|l| label(&l)));
    let encoding = declared.unwrap_or_else(|| {
        if std::str::from_utf8(bytes).is_ok() {
            UTF_8
        } else {
            WINDOWS_1252
        }
    });
    encoding.decode(bytes).0.into_owned()
}

/// An encoding label; UTF-16 declared inside a byte-oriented document means UTF-8 (HTML spec).
fn label(name: &str) -> Option<&'static Encoding> {
    Encoding::for_label(name.trim().as_bytes()).map(|e| e.output_encoding())
}

fn charset_param(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// The charset a `<meta charset=…>` or `<meta http-equiv content="…; charset=…">` declares.
fn meta_charset(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    text.split("<meta").skip(1).find_map(|tag| {
        let tag = tag.split('>').next().unwrap_or_default();
        let at = tag.find("charset")?;
        let rest = tag.get(at + "charset".len()..)?.trim_start();
        let value = rest.strip_prefix('=')?.trim_start();
        let value: String = value
            .trim_start_matches(['"', '\''])
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "-_.:".contains(*c))
            .collect();
        (!value.is_empty()).then_some(value)
    })
}

/// Everything the preview needs from a decoded page at `url`.
pub fn extract(html: &str, url: &Url) -> Page {
    tokenize(html, Found::default()).into_page(url)
}

/// The visible text of an HTML fragment (an oEmbed `html` field), whitespace collapsed.
pub fn fragment_text(html: &str) -> Option<String> {
    let mut found = tokenize(
        html,
        Found {
            capture: Capture::All(String::new()),
            ..Found::default()
        },
    );
    match std::mem::take(&mut found.capture) {
        Capture::All(text) => clean(&text, MAX_DESCRIPTION_CHARS),
        Capture::Nothing | Capture::Title(_) | Capture::Paragraph(_) => None,
    }
}

/// Runs the tokenizer alone over `html`. No tree is built: the tree builder's scope checks
/// make deeply nested markup quadratic (40,000 nested `<div>`s took 8 s), the tokenizer is
/// linear in the input.
fn tokenize(html: &str, found: Found) -> Found {
    let tokenizer = Tokenizer::new(Sink(RefCell::new(found)), TokenizerOpts::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    // The sink never asks for scripts to run, so the tokenizer stops only when done.
    while let TokenizerResult::Script(()) = tokenizer.feed(&input) {}
    tokenizer.end();
    tokenizer.sink.0.into_inner()
}

struct Sink(RefCell<Found>);

impl TokenSink for Sink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let mut found = self.0.borrow_mut();
        match token {
            Token::TagToken(tag) => found.tag(&tag),
            Token::CharacterTokens(text) => {
                found.text(&text);
                TokenSinkResult::Continue
            }
            _ => TokenSinkResult::Continue,
        }
    }
}

/// Text being collected.
#[derive(Default)]
enum Capture {
    #[default]
    Nothing,
    Title(String),
    Paragraph(String),
    /// Everything outside scripts and styles (fragments).
    All(String),
}

#[derive(Default)]
struct Found {
    og: Map<String, Value>,
    title: Option<String>,
    description: Option<String>,
    twitter: Map<String, Value>,
    paragraph: Option<String>,
    base: Option<String>,
    oembed: Option<String>,
    /// `src`, declared area.
    images: Vec<(String, u64)>,
    capture: Capture,
    /// Inside `<script>`, `<style>` and the like, whose text is not text.
    raw: Option<&'static str>,
}

impl Found {
    fn tag(&mut self, tag: &Tag) -> TokenSinkResult<()> {
        let name: &str = &tag.name;
        if tag.kind == TagKind::EndTag {
            if self.raw == Some(name) {
                self.raw = None;
            }
            self.end(name);
            return TokenSinkResult::Continue;
        }
        let attr = |wanted: &str| {
            tag.attrs
                .iter()
                .find(|a| &*a.name.local == wanted)
                .map(|a| &*a.value)
        };
        match name {
            "meta" => self.meta(attr("property").or_else(|| attr("name")), attr("content")),
            "title" if self.title.is_none() && !tag.self_closing => {
                self.capture = Capture::Title(String::new());
                return TokenSinkResult::RawData(RawKind::Rcdata);
            }
            "base" if self.base.is_none() => self.base = attr("href").map(str::to_owned),
            "link" if self.oembed.is_none() => {
                let alternate = attr("rel")
                    .is_some_and(|r| r.split_ascii_whitespace().any(|r| r == "alternate"));
                let json = attr("type")
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json+oembed"));
                if alternate && json {
                    self.oembed = attr("href").map(str::to_owned);
                }
            }
            "img" if self.images.len() < MAX_IMAGES => {
                if let Some(src) = attr("src").map(str::trim)
                    && !src.is_empty()
                    && !src.starts_with("data:")
                {
                    let dim = |name| {
                        attr(name)
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .unwrap_or(0)
                    };
                    self.images
                        .push((src.to_owned(), dim("width").saturating_mul(dim("height"))));
                }
            }
            "p" if self.paragraph.is_none() && matches!(self.capture, Capture::Nothing) => {
                self.capture = Capture::Paragraph(String::new());
            }
            "script" | "style" | "textarea" | "xmp" | "iframe" | "noembed" | "noframes"
                if !tag.self_closing =>
            {
                self.raw = Some(match name {
                    "script" => "script",
                    "style" => "style",
                    "textarea" => "textarea",
                    "xmp" => "xmp",
                    "iframe" => "iframe",
                    "noembed" => "noembed",
                    _ => "noframes",
                });
                let kind = match name {
                    "script" => RawKind::ScriptData,
                    "textarea" => RawKind::Rcdata,
                    _ => RawKind::Rawtext,
                };
                return TokenSinkResult::RawData(kind);
            }
            _ => {}
        }
        TokenSinkResult::Continue
    }

    fn meta(&mut self, key: Option<&str>, content: Option<&str>) {
        let (Some(key), Some(content)) = (key, content) else {
            return;
        };
        let key = key.trim().to_ascii_lowercase();
        let Some(content) = clean(content, MAX_VALUE_CHARS) else {
            return;
        };
        if key.starts_with("og:") {
            if self.og.len() < MAX_PROPERTIES && !self.og.contains_key(&key) {
                self.og.insert(key, Value::String(content));
            }
        } else if key == "description" {
            self.description.get_or_insert(content);
        } else if matches!(
            key.as_str(),
            "twitter:title" | "twitter:description" | "twitter:image"
        ) && !self.twitter.contains_key(&key)
        {
            self.twitter.insert(key, Value::String(content));
        }
    }

    fn text(&mut self, text: &str) {
        let keep = match &self.capture {
            Capture::Title(_) => true,
            Capture::Paragraph(_) | Capture::All(_) => self.raw.is_none(),
            Capture::Nothing => false,
        };
        if let Capture::Title(buf) | Capture::Paragraph(buf) | Capture::All(buf) = &mut self.capture
            && keep
            && buf.len() < MAX_VALUE_CHARS * 4
        {
            buf.push_str(text);
        }
    }

    fn end(&mut self, name: &str) {
        match (&mut self.capture, name) {
            (Capture::Title(buf), "title") => {
                self.title = clean(buf, MAX_VALUE_CHARS);
                self.capture = Capture::Nothing;
            }
            (Capture::Paragraph(buf), "p") => {
                self.paragraph =
                    clean(buf, MAX_DESCRIPTION_CHARS).filter(|p| p.chars().count() >= 20);
                self.capture = Capture::Nothing;
            }
            _ => {}
        }
    }

    fn into_page(mut self, url: &Url) -> Page {
        let base = self
            .base
            .as_deref()
            .and_then(|b| url.join(b).ok())
            .unwrap_or_else(|| url.clone());
        let resolve = |raw: &str| {
            base.join(raw)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
        };
        let og_image = ["og:image", "og:image:url", "og:image:secure_url"]
            .iter()
            .find_map(|k| self.og.get(*k).and_then(Value::as_str).and_then(resolve));
        let twitter_image = self
            .twitter
            .get("twitter:image")
            .and_then(Value::as_str)
            .and_then(resolve);
        // Largest declared area first; among equals (undeclared, usually), the first on the page.
        let largest = self
            .images
            .iter()
            .enumerate()
            .max_by_key(|(i, (_, area))| (*area, std::cmp::Reverse(*i)))
            .and_then(|(_, (src, _))| resolve(src));
        self.og.retain(|k, _| !is_image_key(k));
        let fallback_title = self
            .twitter
            .remove("twitter:title")
            .or(self.title.map(Value::String));
        if let Some(title) = fallback_title {
            self.og.entry("og:title").or_insert(title);
        }
        let fallback_description = self
            .description
            .map(Value::String)
            .or_else(|| self.twitter.remove("twitter:description"))
            .or(self.paragraph.map(Value::String));
        if let Some(description) = fallback_description {
            self.og.entry("og:description").or_insert(description);
        }
        Page {
            og: self.og,
            image: og_image.or(twitter_image).or(largest),
            oembed: self.oembed.as_deref().and_then(resolve),
        }
    }
}

/// Keys describing the page's image: replaced by those of the copy we store.
pub fn is_image_key(key: &str) -> bool {
    key == "og:image" || (key.starts_with("og:image:") && key != "og:image:alt")
}

/// Whitespace collapsed, cut to `max` characters; `None` if nothing is left.
fn clean(raw: &str, max: usize) -> Option<String> {
    let mut out = String::new();
    for word in raw.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.len() > max * 4 {
            break;
        }
    }
    if out.chars().count() > max {
        out = out.chars().take(max).collect();
        out.push('…');
    }
    (!out.is_empty()).then_some(out)
}
