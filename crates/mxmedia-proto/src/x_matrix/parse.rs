//! The auth-param grammar of an `Authorization: X-Matrix ...` header ([spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication), RFC 9110
//! §11.4), turned into lower-cased (name, value) pairs. It accepts what the spec says receivers
//! should: quoted or bare values, backslash escapes, colons in bare values, whitespace around
//! commas and `=`, and empty list elements. It never panics and never slices inside a character:
//! every split is at an ASCII delimiter.

use crate::error::{Error, Result};

/// The authentication scheme, compared case-insensitively.
pub const SCHEME: &str = "X-Matrix";

/// More parameters than any sender writes; the cap keeps the duplicate check cheap.
const MAX_PARAMS: usize = 16;

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// RFC 9110 `tchar`, the characters of a parameter name.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Whether a header value uses the X-Matrix scheme ([spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication) step 1), so a caller can pick the
/// right `Authorization` header among several.
pub fn is_x_matrix(header: &str) -> bool {
    let header = header.trim_start_matches(is_ows);
    let scheme = header.split(is_ows).next().unwrap_or_default();
    scheme.eq_ignore_ascii_case(SCHEME)
}

/// Splits `X-Matrix name=value, ...` into pairs with lower-cased names, in header order.
pub(super) fn parse_params(header: &str) -> Result<Vec<(String, String)>> {
    let header = header.trim_matches(is_ows);
    let Some((scheme, mut rest)) = header.split_once(is_ows) else {
        return Err(Error::BadHeader("no parameters after the scheme"));
    };
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Err(Error::BadHeader("scheme is not X-Matrix"));
    }
    let mut params: Vec<(String, String)> = Vec::new();
    loop {
        // RFC 9110 §5.6.1: recipients accept and ignore empty list elements.
        rest = rest.trim_start_matches(|c| is_ows(c) || c == ',');
        if rest.is_empty() {
            break;
        }
        let name_len = rest.find(|c| !is_tchar(c)).unwrap_or(rest.len());
        if name_len == 0 {
            return Err(Error::BadHeader("expected a parameter name"));
        }
        let (name, after) = rest.split_at(name_len);
        let Some(after) = after.trim_start_matches(is_ows).strip_prefix('=') else {
            return Err(Error::BadHeader("parameter without '='"));
        };
        let after = after.trim_start_matches(is_ows);
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => parse_quoted(quoted)?,
            None => parse_bare(after)?,
        };
        let name = name.to_ascii_lowercase();
        if params.iter().any(|(seen, _)| *seen == name) {
            return Err(Error::BadHeader("duplicate parameter"));
        }
        if params.len() == MAX_PARAMS {
            return Err(Error::BadHeader("too many parameters"));
        }
        params.push((name, value));
        let after = after.trim_start_matches(is_ows);
        if after.is_empty() {
            break;
        }
        let Some(after) = after.strip_prefix(',') else {
            return Err(Error::BadHeader("expected ',' between parameters"));
        };
        rest = after;
    }
    if params.is_empty() {
        return Err(Error::BadHeader("no parameters after the scheme"));
    }
    Ok(params)
}

/// The body of a quoted-string after its opening `"`; returns the unescaped value and the text
/// after the closing quote. `\X` stands for `X`, as [spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication) says.
fn parse_quoted(text: &str) -> Result<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, text.get(i + 1..).unwrap_or_default())),
            '\\' => {
                let Some((_, escaped)) = chars.next() else {
                    break;
                };
                check_quoted_char(escaped)?;
                value.push(escaped);
            }
            c => {
                check_quoted_char(c)?;
                value.push(c);
            }
        }
    }
    Err(Error::BadHeader("unterminated quoted value"))
}

/// RFC 9110 `qdtext`/`quoted-pair` allow HTAB, SP, visible ASCII and obs-text, no other controls.
fn check_quoted_char(c: char) -> Result<()> {
    if c.is_control() && c != '\t' {
        return Err(Error::BadHeader("control character in quoted value"));
    }
    Ok(())
}

/// A bare value runs to the next whitespace or comma. It may hold more than `token` allows
/// (colons, as [spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication) asks, and `/` or `=` from base64) but no quotes, backslashes or
/// non-visible characters.
fn parse_bare(text: &str) -> Result<(String, &str)> {
    let len = text.find(|c| is_ows(c) || c == ',').unwrap_or(text.len());
    let (value, after) = text.split_at(len);
    if value.is_empty() {
        return Err(Error::BadHeader("empty parameter value"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
    {
        return Err(Error::BadHeader("bad character in unquoted value"));
    }
    Ok((value.to_owned(), after))
}
