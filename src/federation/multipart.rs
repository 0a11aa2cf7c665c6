//! The pure parts of reading a remote server's `multipart/mixed` media answer (spec §10.3):
//! the boundary from `Content-Type`, a line-ending normaliser so that `multer` (strict CRLF)
//! also reads LF-only bodies, and the header values we keep (`Content-Type`, the file name of
//! `Content-Disposition`), both sanitised because remote servers are untrusted.
//!
//! The streaming itself (the HTTP body, `multer`, size limits) is `federation::media`'s.

use bytes::{Bytes, BytesMut};
use percent_encoding::percent_decode_str;

/// The boundary of a `multipart/*` content type, quoted or not; `None` for anything else.
pub fn boundary(content_type: &str) -> Option<String> {
    let mime: mime::Mime = content_type.trim().parse().ok()?;
    if mime.type_() != mime::MULTIPART {
        return None;
    }
    let boundary = mime.get_param(mime::BOUNDARY)?.as_str();
    // RFC 2046 §5.1.1: 1 to 70 characters; anything else is not worth guessing at.
    let valid = (1..=70).contains(&boundary.len())
        && boundary.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    valid.then(|| boundary.to_owned())
}

/// Rewrites bare LF line ends into CRLF where the multipart structure needs them (the
/// delimiter lines, part headers and the line end before a delimiter) and passes everything
/// else, bodies included, through untouched. A CRLF body comes out byte for byte the same.
pub struct Normalizer {
    /// `--boundary`.
    marker: Vec<u8>,
    state: State,
    /// Bytes held back because a delimiter may start in them.
    carry: Vec<u8>,
    /// The last byte emitted, to tell whether a LF already follows a CR.
    prev: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first delimiter.
    Preamble,
    /// The rest of a delimiter line.
    Delimiter,
    /// Part headers; `line_len` counts the bytes of the current line but CRs.
    Headers {
        line_len: usize,
    },
    Body,
}

impl Normalizer {
    pub fn new(boundary: &str) -> Self {
        Self {
            marker: format!("--{boundary}").into_bytes(),
            state: State::Preamble,
            carry: Vec::new(),
            prev: 0,
        }
    }

    /// The normalised form of `input`, which may be any slice of the body.
    pub fn feed(&mut self, input: &[u8]) -> Bytes {
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(input);
        let mut out = BytesMut::with_capacity(data.len() + 16);
        let mut i = 0;
        while i < data.len() {
            let rest = data.get(i..).unwrap_or_default();
            match self.state {
                State::Preamble => match memchr::memmem::find(rest, &self.marker) {
                    Some(at) => {
                        let end = at + self.marker.len();
                        self.emit(&mut out, rest.get(..end).unwrap_or_default());
                        self.state = State::Delimiter;
                        i += end;
                    }
                    None => {
                        let keep = (self.marker.len() - 1).min(rest.len());
                        let split = rest.len() - keep;
                        self.emit(&mut out, rest.get(..split).unwrap_or_default());
                        self.carry = rest.get(split..).unwrap_or_default().to_vec();
                        break;
                    }
                },
                State::Delimiter | State::Headers { .. } => {
                    let Some(at) = memchr::memchr(b'\n', rest) else {
                        let line = rest;
                        self.count_line(line);
                        self.emit(&mut out, line);
                        break;
                    };
                    let line = rest.get(..at).unwrap_or_default();
                    self.count_line(line);
                    self.emit(&mut out, line);
                    self.end_line(&mut out);
                    self.state = match self.state {
                        State::Headers { line_len: 0 } => State::Body,
                        _ => State::Headers { line_len: 0 },
                    };
                    i += at + 1;
                }
                State::Body => {
                    let mut pattern = Vec::with_capacity(self.marker.len() + 1);
                    pattern.push(b'\n');
                    pattern.extend_from_slice(&self.marker);
                    match memchr::memmem::find(rest, &pattern) {
                        Some(at) => {
                            self.emit(&mut out, rest.get(..at).unwrap_or_default());
                            self.end_line(&mut out);
                            self.emit(&mut out, &self.marker.clone());
                            self.state = State::Delimiter;
                            i += at + pattern.len();
                        }
                        None => {
                            let keep = (pattern.len() - 1).min(rest.len());
                            let split = rest.len() - keep;
                            self.emit(&mut out, rest.get(..split).unwrap_or_default());
                            self.carry = rest.get(split..).unwrap_or_default().to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out.freeze()
    }

    /// Whatever was held back, at the end of the body.
    pub fn finish(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.carry))
    }

    fn emit(&mut self, out: &mut BytesMut, bytes: &[u8]) {
        if let Some(last) = bytes.last() {
            self.prev = *last;
            out.extend_from_slice(bytes);
        }
    }

    /// Writes a line end, adding the CR a bare LF lacks.
    fn end_line(&mut self, out: &mut BytesMut) {
        if self.prev != b'\r' {
            out.extend_from_slice(b"\r");
        }
        out.extend_from_slice(b"\n");
        self.prev = b'\n';
    }

    fn count_line(&mut self, bytes: &[u8]) {
        if let State::Headers { line_len } = &mut self.state {
            *line_len += bytes.iter().filter(|b| **b != b'\r').count();
        }
    }
}

/// The file name of a `Content-Disposition` value: `filename*` (RFC 8187, UTF-8) preferred over
/// `filename`. Path separators and control characters are dropped; an empty name is none.
pub fn disposition_filename(value: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for param in split_params(value).into_iter().skip(1) {
        let Some((name, raw)) = param.split_once('=') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let raw = raw.trim();
        if name == "filename*" {
            // charset'language'percent-encoded; only UTF-8 (and its ASCII subset) is read.
            let mut pieces = raw.splitn(3, '\'');
            if let (Some(charset), Some(_), Some(encoded)) =
                (pieces.next(), pieces.next(), pieces.next())
                && (charset.eq_ignore_ascii_case("utf-8")
                    || charset.eq_ignore_ascii_case("us-ascii"))
            {
                extended = percent_decode_str(encoded)
                    .decode_utf8()
                    .ok()
                    .map(|s| s.into_owned());
            }
        } else if name == "filename" {
            plain = Some(unquote(raw));
        }
    }
    let name: String = extended
        .or(plain)?
        .chars()
        .filter(|c| !c.is_control() && *c != '/' && *c != '\\')
        .take(255)
        .collect();
    let name = name.trim().to_owned();
    (!name.is_empty()).then_some(name)
}

/// A remote `Content-Type` reduced to what is safe to store and send on: a `type/subtype`
/// of token characters with its parameters, at most 255 bytes, else `application/octet-stream`.
pub fn sanitize_content_type(value: Option<&str>) -> String {
    const FALLBACK: &str = "application/octet-stream";
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return FALLBACK.to_owned();
    };
    if value.len() > 255 || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return FALLBACK.to_owned();
    }
    match value.parse::<mime::Mime>() {
        Ok(mime) if mime.type_() != mime::STAR && mime.subtype() != mime::STAR => {
            mime.as_ref().to_owned()
        }
        _ => FALLBACK.to_owned(),
    }
}

/// Splits a header value at `;` outside quoted strings.
fn split_params(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(value.get(start..i).unwrap_or_default());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value.get(start..).unwrap_or_default());
    out
}

fn unquote(raw: &str) -> String {
    let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return raw.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;
