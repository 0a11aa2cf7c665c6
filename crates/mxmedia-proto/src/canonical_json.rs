//! Canonical JSON ([spec: canonical JSON](https://spec.matrix.org/v1.16/appendices/#canonical-json)): the one byte string that ed25519 signatures are made over. It is
//! written by hand rather than with `serde_json::to_string` because signatures depend on every
//! byte: key order must not depend on serde_json's `preserve_order` feature (which any crate in
//! the build could turn on), numbers must be range-checked, and the escapes must be exactly the
//! ABNF's.

use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

/// The largest integer canonical JSON allows, 2^53 - 1; the smallest is its negation.
pub const MAX_SAFE_INT: i64 = (1 << 53) - 1;

/// MAX_SAFE_INT as a float; exactly representable, so comparisons against it are exact.
const MAX_SAFE_FLOAT: f64 = 9_007_199_254_740_991.0;

/// Deeper values are refused: the encoder recurses, and serde_json's own parser stops at 128
/// levels, so nothing that arrived as text is turned away by this.
const MAX_DEPTH: usize = 256;

/// Encodes `value` as canonical JSON: keys sorted by code point, no insignificant whitespace,
/// non-ASCII written raw, only the required escapes, integers only.
///
/// Numbers must be integers in `[-(2^53)+1, 2^53-1]`. A float with no fractional part inside
/// that range (`1e10`, `-0`) is written as that integer, as the spec's own test vector
/// `{"a":-0,"b":1e10}` → `{"a":0,"b":10000000000}` requires; any other float is refused.
pub fn canonical_json(value: &Value) -> Result<String> {
    let mut out = String::new();
    write_value(&mut out, value, 0)?;
    Ok(out)
}

/// Parses JSON text and encodes it canonically. Duplicate keys keep the last value, as
/// serde_json (and Python's `json`) do.
pub fn canonical_json_str(text: &str) -> Result<String> {
    let value: Value = serde_json::from_str(text).map_err(|e| Error::BadJson(e.to_string()))?;
    canonical_json(&value)
}

fn write_value(out: &mut String, value: &Value, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::NotCanonical("nested too deeply"));
    }
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, depth + 1)?;
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map, depth)?,
    }
    Ok(())
}

fn write_object(out: &mut String, map: &Map<String, Value>, depth: usize) -> Result<()> {
    // `str` orders by UTF-8 bytes, which is the same order as by code point.
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (key, item)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        write_value(out, item, depth + 1)?;
    }
    out.push('}');
    Ok(())
}

fn write_number(out: &mut String, n: &Number) -> Result<()> {
    let int = if let Some(i) = n.as_i64() {
        i
    } else if n.is_u64() {
        // Only u64 values above i64::MAX land here, far beyond 2^53.
        return Err(Error::NotCanonical("integer out of range"));
    } else {
        float_as_int(n.as_f64())?
    };
    if !(-MAX_SAFE_INT..=MAX_SAFE_INT).contains(&int) {
        return Err(Error::NotCanonical("integer out of range"));
    }
    // Writing to a String cannot fail.
    let _ = write!(out, "{int}");
    Ok(())
}

fn float_as_int(f: Option<f64>) -> Result<i64> {
    let Some(f) = f.filter(|f| f.is_finite()) else {
        return Err(Error::NotCanonical("number is not finite"));
    };
    if f.fract() != 0.0 {
        return Err(Error::NotCanonical("number has a fraction"));
    }
    if f.abs() > MAX_SAFE_FLOAT {
        return Err(Error::NotCanonical("integer out of range"));
    }
    // A whole number within ±(2^53 - 1) converts exactly; -0.0 becomes 0 as the spec wants.
    Ok(f as i64)
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests;
