//! The pure parts of reading a remote server's `multipart/mixed` media answer
//! (https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1mediadownloadmediaid):
//! the boundary from `Content-Type`, a framer that bounds what a hostile origin can make a
//! reader hold and rewrites LF-only framing into CRLF for strict parsers, and the header values
//! kept (`Content-Type`, the file name of `Content-Disposition`), both sanitised because remote
//! servers are untrusted.
//!
//! A multipart parser keeps in memory whatever it has not yet matched: everything before the
//! first delimiter, and a part's whole header block until its blank line. [`Framer`] sees every
//! byte first and fails as soon as the preamble, a part's header block or the first (metadata)
//! part passes its [`Limits`], so that memory is bounded however long the origin keeps sending.
//! The streaming itself (HTTP, the parser, the media size limit) belongs to the caller.

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

/// How much of each piece of framing is accepted. The spec's answer has no preamble, two
/// short header blocks and `{}` as its metadata; the defaults leave real servers ample room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes before the first delimiter.
    pub preamble: usize,
    /// Bytes of one part's header block, from the end of its delimiter to its blank line.
    pub headers: usize,
    /// Bytes of the first part's body (the metadata JSON).
    pub first_part: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            preamble: 4 * 1024,
            headers: 8 * 1024,
            first_part: 64 * 1024,
        }
    }
}

/// The piece of framing that passed its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overflow {
    #[error("multipart preamble over {0} bytes")]
    Preamble(usize),
    #[error("multipart part headers over {0} bytes")]
    Headers(usize),
    #[error("multipart metadata part over {0} bytes")]
    FirstPart(usize),
}

/// Checks a multipart body against [`Limits`] as it streams, and rewrites bare LF line ends into
/// CRLF where the multipart structure needs them (the delimiter lines, part headers and the
/// line end before a delimiter). Everything else, part bodies included, passes through
/// untouched: a CRLF body comes out byte for byte the same. It holds back at most a
/// delimiter's length of input, and its output for one input is at most twice that input plus
/// a delimiter's length.
pub struct Framer {
    /// `--boundary`.
    marker: Vec<u8>,
    /// `\n--boundary`, searched for in part bodies.
    body_marker: Vec<u8>,
    limits: Limits,
    state: State,
    /// Bytes held back because a delimiter may start in them.
    carry: Vec<u8>,
    /// The last byte emitted, to tell whether a LF already follows a CR.
    prev: u8,
    /// Parts whose delimiter has been seen.
    parts: usize,
    /// Bytes of the current section counted against its limit.
    used: usize,
    failed: Option<Overflow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first delimiter.
    Preamble,
    /// The rest of a delimiter line; `start` holds its first two bytes, to spot the close
    /// delimiter (`--boundary--`).
    Delimiter {
        start: [u8; 2],
        len: usize,
    },
    /// Part headers; `line_len` counts the bytes of the current line but CRs.
    Headers {
        line_len: usize,
    },
    Body,
    /// After the close delimiter: ignored by parsers, passed through as it is.
    Epilogue,
}

impl Framer {
    pub fn new(boundary: &str, limits: Limits) -> Self {
        let marker = format!("--{boundary}").into_bytes();
        let mut body_marker = Vec::with_capacity(marker.len() + 1);
        body_marker.push(b'\n');
        body_marker.extend_from_slice(&marker);
        Self {
            marker,
            body_marker,
            limits,
            state: State::Preamble,
            carry: Vec::new(),
            prev: 0,
            parts: 0,
            used: 0,
            failed: None,
        }
    }

    /// The checked, normalised form of `input`, which may be any slice of the body. Once a
    /// limit is passed, this and every later call fail.
    pub fn feed(&mut self, input: &[u8]) -> Result<Vec<u8>, Overflow> {
        if let Some(failed) = self.failed {
            return Err(failed);
        }
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(input);
        let mut out = Vec::with_capacity(data.len() + 16);
        let mut i = 0;
        while i < data.len() {
            let rest = data.get(i..).unwrap_or_default();
            let advanced = match self.state {
                State::Preamble => self.preamble(&mut out, rest),
                State::Delimiter { .. } | State::Headers { .. } => self.header_line(&mut out, rest),
                State::Body => self.body(&mut out, rest),
                State::Epilogue => {
                    self.emit(&mut out, rest);
                    None
                }
            };
            if let Some(failed) = self.failed {
                return Err(failed);
            }
            match advanced {
                Some(n) => i += n,
                None => break,
            }
        }
        Ok(out)
    }

    /// Whatever was held back, at the end of the body.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.carry)
    }

    /// Emits preamble bytes up to and including the first delimiter; `None` when the input
    /// ends first (the tail that may start a delimiter is carried).
    fn preamble(&mut self, out: &mut Vec<u8>, rest: &[u8]) -> Option<usize> {
        if let Some(at) = memchr::memmem::find(rest, &self.marker) {
            self.charge(
                at,
                Overflow::Preamble(self.limits.preamble),
                self.limits.preamble,
            );
            let end = at + self.marker.len();
            self.emit(out, rest.get(..end).unwrap_or_default());
            self.start_part();
            return Some(end);
        }
        let split = rest.len() - (self.marker.len() - 1).min(rest.len());
        self.charge(
            split,
            Overflow::Preamble(self.limits.preamble),
            self.limits.preamble,
        );
        self.emit(out, rest.get(..split).unwrap_or_default());
        self.carry = rest.get(split..).unwrap_or_default().to_vec();
        None
    }

    /// Emits (part of) a delimiter or header line, ending it with CRLF when it ends here.
    fn header_line(&mut self, out: &mut Vec<u8>, rest: &[u8]) -> Option<usize> {
        let end = memchr::memchr(b'\n', rest);
        let line = rest.get(..end.unwrap_or(rest.len())).unwrap_or_default();
        let limit = self.limits.headers;
        self.charge(
            line.len() + usize::from(end.is_some()),
            Overflow::Headers(limit),
            limit,
        );
        match &mut self.state {
            State::Headers { line_len } => {
                *line_len += line.iter().filter(|b| **b != b'\r').count();
            }
            State::Delimiter { start, len } => {
                for b in line.iter().take(2usize.saturating_sub(*len)) {
                    if let Some(slot) = start.get_mut(*len) {
                        *slot = *b;
                    }
                    *len += 1;
                }
            }
            _ => {}
        }
        self.emit(out, line);
        let at = end?;
        self.end_line(out);
        self.state = match self.state {
            State::Delimiter { start, .. } if start == *b"--" => State::Epilogue,
            State::Headers { line_len: 0 } => {
                self.used = 0;
                State::Body
            }
            _ => State::Headers { line_len: 0 },
        };
        Some(at + 1)
    }

    /// Emits part body bytes up to the next delimiter, which it emits with a CRLF before it.
    fn body(&mut self, out: &mut Vec<u8>, rest: &[u8]) -> Option<usize> {
        let first = self.parts == 1;
        let limit = self.limits.first_part;
        if let Some(at) = memchr::memmem::find(rest, &self.body_marker) {
            let part = rest.get(..at).unwrap_or_default();
            if first {
                // The CR before the delimiter's LF is the delimiter's.
                let len = part.len() - usize::from(part.ends_with(b"\r"));
                self.charge(len, Overflow::FirstPart(limit), limit);
            }
            self.emit(out, part);
            self.end_line(out);
            out.extend_from_slice(&self.marker);
            self.prev = self.marker.last().copied().unwrap_or(0);
            self.start_part();
            return Some(at + self.body_marker.len());
        }
        // A delimiter may start in the last bytes, with the CR before it.
        let split = rest.len() - self.body_marker.len().min(rest.len());
        if first {
            self.charge(split, Overflow::FirstPart(limit), limit);
        }
        self.emit(out, rest.get(..split).unwrap_or_default());
        self.carry = rest.get(split..).unwrap_or_default().to_vec();
        None
    }

    fn start_part(&mut self) {
        self.parts = self.parts.saturating_add(1);
        self.used = 0;
        self.state = State::Delimiter {
            start: [0; 2],
            len: 0,
        };
    }

    /// Counts `n` bytes against the current section's `limit`.
    fn charge(&mut self, n: usize, overflow: Overflow, limit: usize) {
        self.used = self.used.saturating_add(n);
        if self.used > limit {
            self.failed = Some(overflow);
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        if let Some(last) = bytes.last() {
            self.prev = *last;
            out.extend_from_slice(bytes);
        }
    }

    /// Writes a line end, adding the CR a bare LF lacks.
    fn end_line(&mut self, out: &mut Vec<u8>) {
        if self.prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b'\n');
        self.prev = b'\n';
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
