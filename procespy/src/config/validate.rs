//! From the file as written ([`raw`](super::raw)) to a [`Config`]: units,
//! users and regexes resolved, required keys checked, defaults filled in.
//! Every problem is collected; none stops the others from being found.

use std::{
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use toml::Spanned;

use super::{
    Action, Config, ConfigError, DEFAULT_COOLDOWN, DEFAULT_GRACE, DEFAULT_METRICS_LISTEN,
    DEFAULT_SCAN_INTERVAL, DEFAULT_SMTP_PORT, DEFAULT_SMTPS_PORT, DEFAULT_SPOOL_DIR, Desktop,
    Diagnostic, Email, Enforce, Env, History, KillTarget, Limit, Limits, Matcher, Memory, Metrics,
    Mode, Monitor, Notify, Origin, PATTERN_SIZE_LIMIT, Scope, Security, Tier, Urgency,
    diagnostic::Source,
    raw::{self, DurationText, RawConfig, RawEmail, RawLimit, SizeValue, UserRef},
    units,
};

/// A valid configuration, with the positions [`Config::load`] still needs.
pub(crate) struct Parsed {
    /// The configuration.
    pub(crate) config: Config,
    /// Where the `password_file` key is, when it is set (its message is
    /// filled in by the caller).
    pub(crate) password_file_at: Option<Diagnostic>,
}

/// Parses, deserializes and validates `text`; see [`Config::parse`].
pub(crate) fn parse(text: &str, path: &Path, env: &Env) -> Result<Parsed, ConfigError> {
    let source = Source { path, text };
    let mut read = raw::read(source)?;
    let config = std::mem::take(&mut read.config);
    let diagnostics = std::mem::take(&mut read.diagnostics);
    let mut validator = Validator {
        source,
        env,
        read: &read,
        diagnostics,
    };
    let parsed = validator.config(config);
    let mut diagnostics = validator.diagnostics;
    if diagnostics.is_empty() {
        return Ok(parsed);
    }
    diagnostics.sort_by_key(|d| (d.line, d.col));
    diagnostics.dedup();
    Err(ConfigError { diagnostics })
}

struct Validator<'a> {
    source: Source<'a>,
    env: &'a Env,
    /// What serde made of the file; its `unsure` keys are not checked for
    /// presence.
    read: &'a raw::Read,
    diagnostics: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.diagnostics.push(self.source.at(span, message));
    }

    /// Whether `key` of `table` may be present but wrong; see `raw::Read::unsure`.
    fn unsure(&self, table: &str, key: &str) -> bool {
        self.read.unsure(table, key)
    }

    fn config(&mut self, raw: RawConfig) -> Parsed {
        let monitor = self.monitor(raw.monitor);
        let enforce = self.enforce(raw.enforce);
        let list: Vec<Limit> = raw
            .limit
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(index, limit)| self.limit(index, limit))
            .collect();
        let limits = match Limits::new(list) {
            Ok(limits) => limits,
            Err(message) => {
                self.diagnostics
                    .push(Diagnostic::whole_file(self.source.path, message));
                Limits::default()
            }
        };
        let (notify, password_file_at) = self.notify(raw.notify);
        let metrics = raw.metrics.map(|metrics| self.metrics(metrics));
        let history = self.history(raw.history);
        let config = Config {
            monitor,
            enforce,
            limits,
            notify,
            metrics,
            history,
            origin: Origin::File(self.source.path.to_path_buf()),
        };
        Parsed {
            config,
            password_file_at,
        }
    }

    fn duration(
        &mut self,
        key: &str,
        value: Option<Spanned<DurationText>>,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else { return default };
        match units::parse_duration(&value.get_ref().0) {
            Ok(duration) => duration,
            Err(message) => {
                self.error(value.span(), format!("{key}: {message}"));
                default
            }
        }
    }

    fn monitor(&mut self, raw: Option<raw::RawMonitor>) -> Monitor {
        let Some(raw) = raw else {
            return Monitor::default();
        };
        let zero = raw.scan_interval.as_ref().map(Spanned::span);
        let scan_interval = self.duration(
            "monitor.scan_interval",
            raw.scan_interval,
            DEFAULT_SCAN_INTERVAL,
        );
        if let (Some(span), true) = (zero, scan_interval.is_zero()) {
            self.error(span, "monitor.scan_interval: must be more than 0");
        }
        Monitor {
            mode: raw.mode.unwrap_or(Mode::Auto),
            scan_interval,
        }
    }

    fn enforce(&mut self, raw: Option<raw::RawEnforce>) -> Enforce {
        let Some(raw) = raw else {
            return Enforce::default();
        };
        let grace = self.duration("enforce.grace", raw.grace, DEFAULT_GRACE);
        let protect = match raw.protect {
            None => Enforce::default().protect,
            Some(names) => self.names("enforce.protect", names),
        };
        Enforce {
            dry_run: raw.dry_run.unwrap_or(false),
            grace,
            protect,
        }
    }

    /// A list of names, none of which may be empty.
    fn names(&mut self, key: &str, names: Vec<Spanned<String>>) -> Vec<String> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if name.get_ref().trim().is_empty() {
                self.error(name.span(), format!("{key}: a name must not be empty"));
            } else {
                out.push(name.into_inner());
            }
        }
        out
    }

    fn limit(&mut self, index: usize, raw: Spanned<RawLimit>) -> Option<Limit> {
        let at = raw.span();
        let key = format!("limit[{index}]");
        let raw = raw.into_inner();
        let matcher = match (raw.name, raw.pattern) {
            (Some(_), Some(_)) => {
                self.error(
                    at.clone(),
                    format!(
                        "{key}: has both `name` and `pattern`; a limit takes exactly one of them"
                    ),
                );
                None
            }
            (None, None) => {
                if !self.unsure(&key, "name") && !self.unsure(&key, "pattern") {
                    self.error(
                        at.clone(),
                        format!("{key}: needs `name` (process name) or `pattern` (regex on the command line)"),
                    );
                }
                None
            }
            (Some(name), None) => {
                if name.get_ref().is_empty() {
                    self.error(name.span(), format!("{key}.name: must not be empty"));
                    None
                } else {
                    Some(Matcher::Name(name.into_inner()))
                }
            }
            (None, Some(pattern)) => self.pattern(&key, pattern),
        };
        let user = match raw.user {
            None => Some(None),
            Some(user) => self.limit_user(&key, user),
        };
        let max_memory = match raw.max_memory {
            None => {
                if !self.unsure(&key, "max_memory") {
                    self.error(
                        at,
                        format!("{key}: needs `max_memory`, e.g. max_memory = \"1GiB\""),
                    );
                }
                None
            }
            Some(value) => {
                let (resolved, text) = match value.get_ref() {
                    SizeValue::Bytes(bytes) => {
                        (units::size_from_integer(*bytes), bytes.to_string())
                    }
                    SizeValue::Text(text) => {
                        (units::parse_size(text, self.env.mem_total), text.clone())
                    }
                };
                match resolved {
                    Ok(bytes) => Some((bytes, text)),
                    Err(message) => {
                        self.error(value.span(), format!("{key}.max_memory: {message}"));
                        None
                    }
                }
            }
        };
        let matcher = matcher?;
        let (max_memory, max_memory_text) = max_memory?;
        let action = raw.action.unwrap_or(Action::Kill);
        let memory = raw.memory.map_or(Memory::Rss, |memory| {
            if *memory.get_ref() == Memory::Pss && action == Action::KillNow {
                self.error(
                    memory.span(),
                    format!(
                        "{key}.memory: \"pss\" cannot go with action = \"kill-now\": the kernel \
                         cannot compute PSS at the faulting page; use \"kill\", or memory = \"rss\""
                    ),
                );
            }
            memory.into_inner()
        });
        let kill = raw.kill.map_or(KillTarget::Process, Spanned::into_inner);
        let scope = raw.scope.unwrap_or(Scope::Process);
        let warn_at = raw
            .warn_at
            .and_then(|warn_at| self.warn_at(&key, warn_at, max_memory, scope));
        let label = match &matcher {
            Matcher::Name(name) => name.clone(),
            Matcher::Pattern(pattern) => pattern.clone(),
        };
        Some(Limit {
            index,
            label,
            matcher,
            user: user?,
            max_memory,
            max_memory_text,
            scope,
            action,
            warn_at,
            memory,
            kill,
        })
    }

    /// `warn_at`: a size, or a percentage of `max_memory` (`"80%"`); below
    /// `max_memory`; for a per-process limit.
    fn warn_at(
        &mut self,
        key: &str,
        value: Spanned<SizeValue>,
        max_memory: u64,
        scope: Scope,
    ) -> Option<u64> {
        if scope == Scope::Total {
            self.error(
                value.span(),
                format!(
                    "{key}.warn_at: only for scope = \"process\" (a warning follows one process's growth)"
                ),
            );
            return None;
        }
        let resolved = match value.get_ref() {
            SizeValue::Bytes(bytes) => units::size_from_integer(*bytes),
            SizeValue::Text(text) => units::parse_size(text, max_memory),
        };
        match resolved {
            Ok(bytes) if bytes < max_memory => Some(bytes),
            Ok(_) => {
                self.error(
                    value.span(),
                    format!(
                        "{key}.warn_at: must be below max_memory (a warning comes before the limit)"
                    ),
                );
                None
            }
            Err(message) => {
                let message = message.replace("of the memory", "of max_memory");
                self.error(value.span(), format!("{key}.warn_at: {message}"));
                None
            }
        }
    }

    fn history(&mut self, raw: Option<raw::RawHistory>) -> History {
        let defaults = History::default();
        let Some(raw) = raw else {
            return defaults;
        };
        let path = raw.path.map_or(defaults.path.clone(), |path| {
            if !path.get_ref().is_absolute() {
                self.error(path.span(), "history.path: must be an absolute path");
            }
            path.into_inner()
        });
        let max_size = raw.max_size.map_or(defaults.max_size, |size| {
            let resolved = match size.get_ref() {
                SizeValue::Bytes(bytes) => units::size_from_integer(*bytes),
                SizeValue::Text(text) => units::parse_size(text, self.env.mem_total),
            };
            match resolved {
                Ok(bytes) if bytes >= 1 << 20 => bytes,
                Ok(_) => {
                    self.error(size.span(), "history.max_size: must be at least 1MiB");
                    defaults.max_size
                }
                Err(message) => {
                    self.error(size.span(), format!("history.max_size: {message}"));
                    defaults.max_size
                }
            }
        });
        let tiers = match raw.tiers {
            None => defaults.tiers.clone(),
            Some(tiers) => self.tiers(tiers).unwrap_or(defaults.tiers.clone()),
        };
        History {
            enabled: raw.enabled.unwrap_or(true),
            path,
            tiers,
            max_size,
        }
    }

    /// `tiers`: each `every` positive and a whole number of the finer
    /// tier's, each `keep` longer than the finer tier's and at least its
    /// `every`.
    fn tiers(&mut self, raw: Spanned<Vec<Spanned<raw::RawTier>>>) -> Option<Vec<Tier>> {
        let at = raw.span();
        let raw = raw.into_inner();
        if raw.is_empty() {
            self.error(
                at,
                "history.tiers: needs at least one tier, e.g. [{ every = \"1s\", keep = \"10m\" }]",
            );
            return None;
        }
        let mut tiers = Vec::new();
        let mut ok = true;
        for (i, tier) in raw.into_iter().enumerate() {
            let span = tier.span();
            let tier = tier.into_inner();
            let key = format!("history.tiers[{i}]");
            let every = self.duration(&format!("{key}.every"), Some(tier.every), Duration::ZERO);
            let keep = self.duration(&format!("{key}.keep"), Some(tier.keep), Duration::ZERO);
            if every.is_zero() || keep < every {
                self.error(
                    span,
                    format!("{key}: every must be positive and keep at least every"),
                );
                ok = false;
                continue;
            }
            if let Some(finer) = tiers.last().copied() {
                let finer: Tier = finer;
                if every <= finer.every
                    || !every
                        .as_millis()
                        .is_multiple_of(finer.every.as_millis().max(1))
                    || keep <= finer.keep
                {
                    self.error(
                        span,
                        format!(
                            "{key}: tiers go from fine to coarse: every a multiple of the \
                             previous tier's, keep longer than it"
                        ),
                    );
                    ok = false;
                    continue;
                }
            }
            tiers.push(Tier { every, keep });
        }
        ok.then_some(tiers)
    }

    fn pattern(&mut self, key: &str, pattern: Spanned<String>) -> Option<Matcher> {
        if pattern.get_ref().is_empty() {
            self.error(
                pattern.span(),
                format!("{key}.pattern: must not be empty (it would match every process)"),
            );
            return None;
        }
        let compiled = regex::bytes::RegexBuilder::new(pattern.get_ref())
            .size_limit(PATTERN_SIZE_LIMIT)
            .build();
        match compiled {
            Ok(_) => Some(Matcher::Pattern(pattern.into_inner())),
            Err(err) => {
                self.error(
                    pattern.span(),
                    format!("{key}.pattern: invalid regex: {}", regex_error(&err)),
                );
                None
            }
        }
    }

    /// Resolves `user`; `Some(None)` would be no user, so the outer `None`
    /// means an error was reported.
    fn limit_user(&mut self, key: &str, user: Spanned<UserRef>) -> Option<Option<u32>> {
        let span = user.span();
        let resolved = match user.into_inner() {
            UserRef::Uid(uid) => match u32::try_from(uid) {
                Ok(uid) if uid != u32::MAX => Ok(uid),
                _ => Err(format!("uid {uid} is out of range")),
            },
            UserRef::Name(name) if name.is_empty() => Err("must not be empty".to_string()),
            UserRef::Name(name) => match (self.env.lookup_user)(&name) {
                Some(uid) => Ok(uid),
                None => match name.parse::<u32>() {
                    Ok(uid) if uid != u32::MAX => Ok(uid),
                    _ => Err(format!("unknown user \"{name}\"")),
                },
            },
        };
        match resolved {
            Ok(uid) => Some(Some(uid)),
            Err(message) => {
                self.error(span, format!("{key}.user: {message}"));
                None
            }
        }
    }

    fn notify(&mut self, raw: Option<raw::RawNotify>) -> (Notify, Option<Diagnostic>) {
        let Some(raw) = raw else {
            let defaults = Config::builtin_default().notify;
            return (defaults, None);
        };
        let cooldown = self.duration("notify.cooldown", raw.cooldown, DEFAULT_COOLDOWN);
        let desktop = match raw.desktop {
            None => Desktop {
                enabled: true,
                users: Vec::new(),
                urgency: Urgency::Critical,
            },
            Some(desktop) => {
                let users = desktop.users.unwrap_or_default();
                let mut names = Vec::with_capacity(users.len());
                for user in users {
                    if user.get_ref().is_empty() {
                        self.error(
                            user.span(),
                            "notify.desktop.users: a user name must not be empty",
                        );
                    } else if (self.env.lookup_user)(user.get_ref()).is_none() {
                        self.error(
                            user.span(),
                            format!("notify.desktop.users: unknown user \"{}\"", user.get_ref()),
                        );
                    } else {
                        names.push(user.into_inner());
                    }
                }
                Desktop {
                    enabled: desktop.enabled.unwrap_or(true),
                    users: names,
                    urgency: desktop.urgency.unwrap_or(Urgency::Critical),
                }
            }
        };
        let (email, password_file_at) = match raw.email {
            None => (Email::default(), None),
            Some(email) => self.email(email),
        };
        (
            Notify {
                cooldown,
                desktop,
                email,
            },
            password_file_at,
        )
    }

    fn email(&mut self, raw: Spanned<RawEmail>) -> (Email, Option<Diagnostic>) {
        let at = raw.span();
        let raw = raw.into_inner();
        let enabled = raw.enabled.unwrap_or(false);
        let table = "notify.email";
        if enabled && !self.unsure(table, "enabled") {
            let missing: Vec<String> = [
                ("server", raw.server.is_none()),
                ("from", raw.from.is_none()),
                ("to", raw.to.is_none()),
            ]
            .into_iter()
            .filter(|&(key, missing)| missing && !self.unsure(table, key))
            .map(|(key, _)| format!("`{key}`"))
            .collect();
            if !missing.is_empty() {
                self.error(
                    at,
                    format!("notify.email: enabled, but {} not set", missing.join(", ")),
                );
            }
            match (&raw.username, &raw.password_file) {
                (Some(username), None) if !self.unsure(table, "password_file") => self.error(
                    username.span(),
                    "notify.email.username: set `password_file` too, or remove `username`",
                ),
                (None, Some(file)) if !self.unsure(table, "username") => self.error(
                    file.span(),
                    "notify.email.password_file: set `username` too, or remove `password_file`",
                ),
                _ => {}
            }
        }
        let server = match raw.server {
            None => String::new(),
            Some(server) => {
                let host = server.get_ref();
                if host.is_empty() || host.contains(char::is_whitespace) {
                    self.error(
                        server.span(),
                        format!("notify.email.server: \"{host}\" is not a host name"),
                    );
                }
                server.into_inner()
            }
        };
        let security = raw.security.unwrap_or(Security::StartTls);
        let port = match raw.port {
            None if security == Security::Tls => DEFAULT_SMTPS_PORT,
            None => DEFAULT_SMTP_PORT,
            Some(port) => {
                if *port.get_ref() == 0 {
                    self.error(port.span(), "notify.email.port: must be more than 0");
                }
                port.into_inner()
            }
        };
        let username = raw.username.map(|username| {
            if username.get_ref().is_empty() {
                self.error(username.span(), "notify.email.username: must not be empty");
            }
            username.into_inner()
        });
        let password_file_at = raw.password_file.as_ref().map(|file| {
            let start = key_start(self.source.text, file.span().start);
            self.source.at(start..start, String::new())
        });
        let password_file = raw
            .password_file
            .map(|file| self.absolute("notify.email.password_file", file));
        let from = match raw.from {
            None => String::new(),
            Some(from) => {
                self.address("notify.email.from", &from);
                from.into_inner()
            }
        };
        let to = match raw.to {
            None => Vec::new(),
            Some(to) => {
                if enabled && to.get_ref().is_empty() {
                    self.error(to.span(), "notify.email.to: must list at least one address");
                }
                let to = to.into_inner();
                for address in &to {
                    self.address("notify.email.to", address);
                }
                to.into_iter().map(Spanned::into_inner).collect()
            }
        };
        let spool_dir = match raw.spool_dir {
            None => PathBuf::from(DEFAULT_SPOOL_DIR),
            Some(dir) => self.absolute("notify.email.spool_dir", dir),
        };
        let email = Email {
            enabled,
            server,
            port,
            security,
            username,
            password_file,
            from,
            to,
            spool_dir,
        };
        (email, password_file_at)
    }

    /// A mail address: loosely checked, since display names are allowed.
    fn address(&mut self, key: &str, address: &Spanned<String>) {
        if !address.get_ref().contains('@') {
            self.error(
                address.span(),
                format!("{key}: \"{}\" is not a mail address", address.get_ref()),
            );
        }
    }

    fn absolute(&mut self, key: &str, path: Spanned<PathBuf>) -> PathBuf {
        if !path.get_ref().is_absolute() {
            self.error(
                path.span(),
                format!(
                    "{key}: \"{}\" must be an absolute path",
                    path.get_ref().display()
                ),
            );
        }
        path.into_inner()
    }

    fn metrics(&mut self, raw: Spanned<raw::RawMetrics>) -> Metrics {
        let default: SocketAddr = DEFAULT_METRICS_LISTEN
            .parse()
            .expect("default metrics address");
        let Some(listen) = raw.into_inner().listen else {
            return Metrics { listen: default };
        };
        match listen.get_ref().parse() {
            Ok(listen) => Metrics { listen },
            Err(_) => {
                self.error(
                    listen.span(),
                    format!(
                        "metrics.listen: \"{}\" is not an IP address and port such as \"{DEFAULT_METRICS_LISTEN}\"",
                        listen.get_ref()
                    ),
                );
                Metrics { listen: default }
            }
        }
    }
}

/// The gist of a regex error, on one line: the regex crate's own message
/// spans several lines with the pattern and a caret.
fn regex_error(err: &regex::Error) -> String {
    match err {
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("error: "))
            .unwrap_or_else(|| text.lines().last().unwrap_or("syntax error"))
            .to_string(),
        regex::Error::CompiledTooBig(limit) => {
            format!("the compiled pattern is larger than {limit} bytes")
        }
        other => other.to_string(),
    }
}

/// Where the key of `key = value` starts, given the offset of the value.
/// Falls back on the value's offset when the text does not look like that.
fn key_start(text: &str, value_start: usize) -> usize {
    let before = text[..value_start].trim_end_matches([' ', '\t']);
    let Some(before) = before.strip_suffix('=') else {
        return value_start;
    };
    let before = before.trim_end_matches([' ', '\t']);
    let start = match before.chars().last() {
        Some(quote @ ('"' | '\'')) => before[..before.len() - 1].rfind(quote),
        Some(_) => Some(
            before
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .map_or(0, |i| i + 1),
        ),
        None => None,
    };
    match start {
        Some(start) if start < before.len() => start,
        _ => value_start,
    }
}

#[cfg(test)]
mod tests {
    use super::key_start;

    #[test]
    fn finds_the_key_of_a_value() {
        let text = "a = 1\npassword_file = \"/x\"\n";
        let value = text.find("\"/x").unwrap();
        assert_eq!(key_start(text, value), text.find("password_file").unwrap());
        let text = "email.password_file=\"/x\"";
        assert_eq!(
            key_start(text, text.find('"').unwrap()),
            text.find("password_file").unwrap()
        );
        let text = "\"password_file\" = \"/x\"";
        assert_eq!(key_start(text, text.find("\"/x").unwrap()), 0);
        let text = "x = [\"/x\"]";
        assert_eq!(
            key_start(text, text.find('"').unwrap()),
            text.find('"').unwrap()
        );
    }
}
