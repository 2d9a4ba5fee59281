//! The file as written: serde structures that mirror it key for key.
//!
//! Every key is optional here (defaults and required keys are decided in
//! `validate`), unknown keys are refused, and values whose checks need a
//! position are kept in [`Spanned`].
//!
//! serde stops at the first error in a document. To report them all, [`read`]
//! removes the key that caused an error from the parsed document and tries
//! again, until the document deserializes.

use std::{collections::BTreeSet, fmt, ops::Range, path::PathBuf};

use serde::{Deserialize, Deserializer, de};
use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use super::{
    Action, KillTarget, Memory, Mode, Scope, Security, Urgency,
    diagnostic::{Diagnostic, Source},
};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) monitor: Option<RawMonitor>,
    pub(crate) enforce: Option<RawEnforce>,
    pub(crate) limit: Option<Vec<Spanned<RawLimit>>>,
    pub(crate) notify: Option<RawNotify>,
    pub(crate) metrics: Option<Spanned<RawMetrics>>,
    pub(crate) history: Option<RawHistory>,
}

/// `[history]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHistory {
    pub(crate) enabled: Option<bool>,
    pub(crate) path: Option<Spanned<PathBuf>>,
    pub(crate) tiers: Option<Spanned<Vec<Spanned<RawTier>>>>,
    pub(crate) max_size: Option<Spanned<SizeValue>>,
}

/// One `[history] tiers` entry: `{ every = "10s", keep = "6h" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTier {
    pub(crate) every: Spanned<DurationText>,
    pub(crate) keep: Spanned<DurationText>,
}

/// `[monitor]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMonitor {
    pub(crate) mode: Option<Mode>,
    pub(crate) scan_interval: Option<Spanned<DurationText>>,
}

/// `[enforce]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEnforce {
    pub(crate) dry_run: Option<bool>,
    pub(crate) grace: Option<Spanned<DurationText>>,
    pub(crate) protect: Option<Vec<Spanned<String>>>,
}

/// One `[[limit]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimit {
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) pattern: Option<Spanned<String>>,
    pub(crate) user: Option<Spanned<UserRef>>,
    pub(crate) max_memory: Option<Spanned<SizeValue>>,
    pub(crate) scope: Option<Scope>,
    pub(crate) action: Option<Action>,
    pub(crate) warn_at: Option<Spanned<SizeValue>>,
    pub(crate) memory: Option<Spanned<Memory>>,
    pub(crate) kill: Option<Spanned<KillTarget>>,
}

/// `[notify]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotify {
    pub(crate) cooldown: Option<Spanned<DurationText>>,
    pub(crate) desktop: Option<RawDesktop>,
    pub(crate) email: Option<Spanned<RawEmail>>,
}

/// `[notify.desktop]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDesktop {
    pub(crate) enabled: Option<bool>,
    pub(crate) users: Option<Vec<Spanned<String>>>,
    pub(crate) urgency: Option<Urgency>,
}

/// `[notify.email]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEmail {
    pub(crate) enabled: Option<bool>,
    pub(crate) server: Option<Spanned<String>>,
    pub(crate) port: Option<Spanned<u16>>,
    pub(crate) security: Option<Security>,
    pub(crate) username: Option<Spanned<String>>,
    pub(crate) password_file: Option<Spanned<PathBuf>>,
    pub(crate) from: Option<Spanned<String>>,
    pub(crate) to: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) spool_dir: Option<Spanned<PathBuf>>,
}

/// `[metrics]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub(crate) listen: Option<Spanned<String>>,
}

/// A duration as written; only strings are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DurationText(pub String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"250ms\", \"5s\", \"2m\" or \"1h\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A size as written: a bare integer (bytes) or a string with a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SizeValue {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = SizeValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: a whole number of bytes, or a string such as \"512MiB\", \"1.5GiB\" or \"10%\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SizeValue, E> {
                Ok(SizeValue::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SizeValue, E> {
                i64::try_from(v)
                    .map(SizeValue::Bytes)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SizeValue, E> {
                Ok(SizeValue::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A user as written: a name, or a uid number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UserRef {
    Uid(i64),
    Name(String),
}

impl<'de> Deserialize<'de> for UserRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = UserRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a user name or a uid number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<UserRef, E> {
                Ok(UserRef::Uid(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<UserRef, E> {
                Ok(UserRef::Uid(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UserRef, E> {
                Ok(UserRef::Name(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// One step of a key path: a key in a table, or an index in an array.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Writes a key path the way a user would: `limit[1].action`, `notify.email.port`.
fn key_path(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// What [`read`] makes of a syntactically valid document.
pub(crate) struct Read {
    /// The document, less the keys that had errors.
    pub(crate) config: RawConfig,
    /// The errors serde found (unknown keys, wrong types, unknown values).
    pub(crate) diagnostics: Vec<Diagnostic>,
    /// Key paths removed because of an error (`limit[0].name`), and of the
    /// tables that had an unknown key (`limit[0]`, `""` for the top level),
    /// which may be a misspelt known one. A check that a key is present (or
    /// absent) is skipped for these, since the key may well be there, only
    /// wrong: see [`Read::unsure`].
    pub(crate) damaged: BTreeSet<String>,
}

impl Read {
    /// Whether it is unknown if `key` of the table at `table` is present:
    /// the key had an error, or the table had an unknown key.
    pub(crate) fn unsure(&self, table: &str, key: &str) -> bool {
        self.damaged.contains(table) || self.damaged.contains(&format!("{table}.{key}"))
    }
}

/// Parses and deserializes a configuration text. A TOML syntax error is
/// returned alone, as `Err`; other errors are collected in [`Read`].
pub(crate) fn read(source: Source<'_>) -> Result<Read, Diagnostic> {
    let mut document = DeTable::parse(source.text).map_err(|err| {
        let span = err.span().unwrap_or(0..0);
        source.at(span, format!("TOML syntax: {}", err.message()))
    })?;
    let mut read = Read {
        config: RawConfig::default(),
        diagnostics: Vec::new(),
        damaged: BTreeSet::new(),
    };
    // Each round removes one key, so this ends; the bound is only a safeguard.
    for _ in 0..1000 {
        let err = match RawConfig::deserialize(toml::de::Deserializer::from(document.clone())) {
            Ok(config) => {
                read.config = config;
                return Ok(read);
            }
            Err(err) => err,
        };
        let span = err.span().unwrap_or(0..0);
        let mut steps = Vec::new();
        if !remove_at(document.get_mut(), &span, &mut steps) {
            // Nothing to remove: report it where it points, and give up on
            // the rest of the document.
            read.diagnostics
                .push(source.at(span, describe(err.message(), &steps)));
            read.config = RawConfig::default();
            read.damaged.insert(String::new());
            return Ok(read);
        }
        read.diagnostics
            .push(source.at(span, describe(err.message(), &steps)));
        let damaged = if err.message().starts_with("unknown field") {
            &steps[..steps.len() - 1]
        } else {
            &steps[..]
        };
        read.damaged.insert(key_path(damaged));
    }
    read.config = RawConfig::default();
    read.damaged.insert(String::new());
    Ok(read)
}

/// Rewords a serde message for someone editing a TOML file, and says which
/// key it is about. `steps` is the path of the offending key.
fn describe(message: &str, steps: &[Step]) -> String {
    let message = message.trim_end();
    let message = message
        .replace("unknown field", "unknown key")
        .replace("unknown variant", "unknown value")
        .replace("expected struct ", "expected a table ")
        .replace("invalid type: map", "invalid type: table")
        .replace("expected a sequence", "expected an array")
        .replace("expected u16", "expected a port number (1 to 65535)");
    let Some((Step::Key(key), table)) = steps.split_last() else {
        return message;
    };
    if message.starts_with("unknown key") {
        let table = key_path(table);
        if table.is_empty() {
            message
        } else {
            format!("{table}: {message}")
        }
    } else {
        let mut out = format!("{}: {message}", key_path(steps));
        if key == "limit" && table.is_empty() && message.contains("expected an array") {
            out.push_str(" (write each limit as a [[limit]] table, with double brackets)");
        }
        out
    }
}

/// Whether `outer` contains `inner`.
fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// Finds the key, at any depth, whose key or value holds `span`, and removes
/// it; `steps` receives its path. Tables are searched before the key that
/// holds them, so an error inside `[notify.email]` removes one key of that
/// table, not the whole table.
fn remove_at(table: &mut DeTable<'_>, span: &Range<usize>, steps: &mut Vec<Step>) -> bool {
    let mut found = None;
    for (key, value) in table.iter_mut() {
        steps.push(Step::Key(key.get_ref().to_string()));
        let value_span = value.span();
        if let DeValue::Table(inner) = value.get_mut()
            && remove_at(inner, span, steps)
        {
            return true;
        }
        if let DeValue::Array(items) = value.get_mut() {
            for (i, item) in items.iter_mut().enumerate() {
                if let DeValue::Table(inner) = item.get_mut() {
                    steps.push(Step::Index(i));
                    if remove_at(inner, span, steps) {
                        return true;
                    }
                    steps.pop();
                }
            }
            if items.iter().any(|item| contains(&item.span(), span)) {
                found = Some(key.get_ref().to_string());
                break;
            }
        }
        if contains(&key.span(), span) || contains(&value_span, span) {
            found = Some(key.get_ref().to_string());
            break;
        }
        steps.pop();
    }
    match found {
        Some(key) => {
            table.remove(key.as_str());
            true
        }
        None => false,
    }
}
