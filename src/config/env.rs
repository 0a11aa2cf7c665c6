//! Which `MXMEDIA_*` environment variables are settings, before figment reads them.
//!
//! Every setting has a variable, and a mistyped one must not be silently dropped: a variable
//! that names no setting but looks like one (it has a section separator `__`, starts with a
//! section name, or is within a typo or two of a setting's name) is always an error naming it
//! and the setting it probably meant. Any other stray variable under the prefix, such as a
//! shell's `MXMEDIA_TOKEN`, is clearly not meant for us: `check-config` still refuses it (it is
//! the strict validator), while `serve` ignores it and logs that it did, so that a leftover in
//! someone's shell cannot keep the server from starting.

use std::collections::BTreeMap;

use super::{Config, ConfigError, NON_CONFIG_ENV};

pub(crate) const PREFIX: &str = "MXMEDIA_";

/// How variables that name no setting and do not look like one are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrayEnv {
    /// An error, like a typo (`check-config`).
    Refuse,
    /// Ignored; the caller is told which, to log them (`serve`).
    Ignore,
}

/// The settings' names, from the defaults: top-level key -> the keys of its section (empty for
/// a plain value).
fn known() -> BTreeMap<String, Vec<String>> {
    let Ok(serde_json::Value::Object(top)) = serde_json::to_value(Config::default()) else {
        return BTreeMap::new();
    };
    top.into_iter()
        .map(|(key, value)| {
            let keys = match value {
                serde_json::Value::Object(section) => section.keys().cloned().collect(),
                _ => Vec::new(),
            };
            (key, keys)
        })
        .collect()
}

/// Checks the variables in `vars` (names and values as the process has them) and returns the
/// stray ones `Ignore` let through, lower-cased without the prefix as figment names them.
pub(crate) fn check(
    vars: impl IntoIterator<Item = String>,
    strays: StrayEnv,
) -> Result<Vec<String>, ConfigError> {
    let known = known();
    let mut ignored = Vec::new();
    for var in vars {
        let Some(key) = strip_prefix(&var) else {
            continue;
        };
        if NON_CONFIG_ENV.contains(&key.as_str()) || is_setting(&known, &key) {
            continue;
        }
        if looks_like_setting(&known, &key) || strays == StrayEnv::Refuse {
            return Err(ConfigError::UnknownEnv {
                hint: hint(&known, &key),
                var,
            });
        }
        ignored.push(key);
    }
    Ok(ignored)
}

fn strip_prefix(var: &str) -> Option<String> {
    let head = var.get(..PREFIX.len())?;
    head.eq_ignore_ascii_case(PREFIX)
        .then(|| {
            var.get(PREFIX.len()..)
                .unwrap_or_default()
                .to_ascii_lowercase()
        })
        .filter(|key| !key.is_empty())
}

fn is_setting(known: &BTreeMap<String, Vec<String>>, key: &str) -> bool {
    let mut parts = key.split("__");
    let Some(section) = parts.next().and_then(|top| known.get(top)) else {
        return false;
    };
    // Deeper parts (map entries such as `AUTH__STATIC_TOKENS__TOK`) are figment's to check.
    match parts.next() {
        None => true,
        Some(field) => section.iter().any(|k| k == field),
    }
}

fn looks_like_setting(known: &BTreeMap<String, Vec<String>>, key: &str) -> bool {
    key.contains("__")
        || known
            .iter()
            .any(|(top, keys)| !keys.is_empty() && key.starts_with(&format!("{top}_")))
        || closest(known, key).is_some()
}

/// The setting `key` was most likely meant to be, if it is within a typo or two of one: by its
/// full name with `_` for `__`, or by its key alone (the section forgotten).
fn closest(known: &BTreeMap<String, Vec<String>>, key: &str) -> Option<String> {
    let flat = key.replace("__", "_");
    let allowed = match flat.len() {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    };
    let mut best: Option<(usize, String)> = None;
    for (top, keys) in known {
        let mut names = Vec::new();
        if keys.is_empty() {
            names.push((top.clone(), top.clone()));
        }
        for field in keys {
            let var = format!("{top}__{field}");
            names.push((format!("{top}_{field}"), var.clone()));
            names.push((field.clone(), var));
        }
        for (name, var) in names {
            let distance = strsim::damerau_levenshtein(&flat, &name);
            if distance <= allowed && best.as_ref().is_none_or(|(d, _)| distance < *d) {
                best = Some((distance, var));
            }
        }
    }
    best.map(|(_, var)| format!("{PREFIX}{}", var.to_ascii_uppercase()))
}

fn hint(known: &BTreeMap<String, Vec<String>>, key: &str) -> String {
    match closest(known, key) {
        Some(var) => format!("did you mean {var}?"),
        None if looks_like_setting(known, key) => {
            "see the README's configuration table for the settings' names".to_owned()
        }
        None => "`mxmedia serve` ignores it; rename it if it is not meant for mxmedia".to_owned(),
    }
}
