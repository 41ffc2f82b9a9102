//! One log format for nftmesh's binaries (the `nftmesh` CLI and its `istio-iptables`
//! drop-in, the node agent, the CNI plugin): one line per event, stamped in RFC 3339 UTC
//! with milliseconds, as text (`TIME\tLEVEL\tMESSAGE\tkey=value ...`) or as one JSON object
//! (`{"level":..,"time":..,"msg":..,"key":value,...}`).
//!
//! ```
//! use nftmesh::log::{Event, Format, Level, Precision};
//! use std::time::{Duration, UNIX_EPOCH};
//!
//! let at = UNIX_EPOCH + Duration::from_millis(1_796_209_137_123);
//! let e = Event::new(Level::Info, "repaired").field("pod", "/run/netns/p1").field("rules_missing", 3u64);
//! assert_eq!(
//!     e.render(Format::Text, Precision::Millis, at),
//!     "2026-12-02T10:58:57.123Z\tinfo\trepaired\tpod=/run/netns/p1 rules_missing=3\n"
//! );
//! assert_eq!(
//!     e.render(Format::Json, Precision::Millis, at),
//!     "{\"level\":\"info\",\"time\":\"2026-12-02T10:58:57.123Z\",\"msg\":\"repaired\",\
//!      \"pod\":\"/run/netns/p1\",\"rules_missing\":3}\n"
//! );
//! ```
//!
//! What it is not: a logging framework. There are no scopes, no global logger and no
//! rotation; each binary owns one [`Logger`] and passes it where it is needed.

use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// How severe an event is, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Level {
    /// Details: every difference a repair fixed, the configuration read.
    Debug,
    /// What was done (the default threshold).
    #[default]
    Info,
    /// Something was skipped or is suspicious, and the work went on.
    Warn,
    /// Something failed.
    Error,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 4] = [Level::Debug, Level::Info, Level::Warn, Level::Error];

    /// The level as it is written in a line and accepted on a command line: `debug`,
    /// `info`, `warn`, `error`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Level::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| format!("unknown log level {s:?}: debug, info, warn or error"))
    }
}

/// How a line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `TIME\tLEVEL\tMESSAGE`, then a tab and `key=value` pairs if the event has fields.
    #[default]
    Text,
    /// One JSON object per line: `level`, `time`, `msg`, then the fields.
    Json,
}

impl Format {
    /// `text` or `json`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(format!("unknown log format {s:?}: text or json")),
        }
    }
}

/// The fraction of a second a timestamp shows (truncated, never rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Three digits: nftmesh's own logs.
    #[default]
    Millis,
    /// Six digits: Istio's `pkg/log` layout, kept by the `istio-iptables` drop-in.
    Micros,
}

/// `at` as RFC 3339 UTC with milliseconds: `2026-12-02T10:58:57.123Z`.
pub fn timestamp(at: SystemTime) -> String {
    timestamp_with(at, Precision::Millis)
}

/// `at` as RFC 3339 UTC with the fraction `precision` asks for. Instants before 1970 are
/// written as such (`1969-12-31T23:59:59.999Z`).
pub fn timestamp_with(at: SystemTime, precision: Precision) -> String {
    let (secs, nanos) = match at.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let (s, n) = (-(d.as_secs() as i64), d.subsec_nanos());
            if n == 0 {
                (s, 0)
            } else {
                (s - 1, 1_000_000_000 - n)
            }
        }
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let clock = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    match precision {
        Precision::Millis => format!("{clock}.{:03}Z", nanos / 1_000_000),
        Precision::Micros => format!("{clock}.{:06}Z", nanos / 1_000),
    }
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// A field's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Text (a JSON string).
    Text(String),
    /// A count (a JSON number).
    Count(u64),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Count(n)
    }
}

impl From<usize> for Value {
    fn from(n: usize) -> Self {
        Value::Count(n as u64)
    }
}

impl From<&std::path::Path> for Value {
    fn from(p: &std::path::Path) -> Self {
        Value::Text(p.display().to_string())
    }
}

/// One event: a level, a message and named values, rendered as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// How severe it is.
    pub level: Level,
    /// What happened.
    pub msg: String,
    /// Named values, in order. In JSON a key `level`, `time` or `msg` is written `_level`,
    /// `_time`, `_msg` so the line keeps one of each.
    pub fields: Vec<(&'static str, Value)>,
}

impl Event {
    /// An event without fields.
    pub fn new(level: Level, msg: impl Into<String>) -> Self {
        Event {
            level,
            msg: msg.into(),
            fields: Vec::new(),
        }
    }

    /// The event with one more field.
    pub fn field(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.fields.push((key, value.into()));
        self
    }

    /// The event's line, ending in `\n`, as stamped at `at`. A text line escapes the
    /// message's control characters (a newline is written `\n`), so one event is one line.
    pub fn render(&self, format: Format, precision: Precision, at: SystemTime) -> String {
        let time = timestamp_with(at, precision);
        match format {
            Format::Text => self.text(&time),
            Format::Json => self.json(&time),
        }
    }

    fn text(&self, time: &str) -> String {
        let mut line = format!("{time}\t{}\t", self.level);
        for c in self.msg.chars() {
            if c.is_control() {
                line.extend(c.escape_default());
            } else {
                line.push(c);
            }
        }
        for (i, (k, v)) in self.fields.iter().enumerate() {
            line.push(if i == 0 { '\t' } else { ' ' });
            line.push_str(k);
            line.push('=');
            match v {
                Value::Count(n) => line.push_str(&n.to_string()),
                Value::Text(s) if bare(s) => line.push_str(s),
                Value::Text(s) => line.push_str(&json_string(s)),
            }
        }
        line.push('\n');
        line
    }

    fn json(&self, time: &str) -> String {
        let mut line = format!(
            "{{\"level\":\"{}\",\"time\":\"{time}\",\"msg\":{}",
            self.level,
            json_string(&self.msg)
        );
        for (k, v) in &self.fields {
            let key = if matches!(*k, "level" | "time" | "msg") {
                format!("_{k}")
            } else {
                k.to_string()
            };
            line.push(',');
            line.push_str(&json_string(&key));
            line.push(':');
            match v {
                Value::Count(n) => line.push_str(&n.to_string()),
                Value::Text(s) => line.push_str(&json_string(s)),
            }
        }
        line.push_str("}\n");
        line
    }
}

/// Whether a text field's value can be written without quotes and still be read back.
fn bare(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '=' | '\\'))
}

/// `s` as a JSON string literal (serde_json's escaping: quotes, backslashes and every
/// control character).
pub fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Where lines go and which: a threshold, a format and a writer. Writing never fails the
/// caller: a line that cannot be written is dropped.
pub struct Logger {
    min: Option<Level>,
    format: Format,
    precision: Precision,
    out: Option<Mutex<Box<dyn Write + Send>>>,
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger")
            .field("min", &self.min)
            .field("format", &self.format)
            .field("precision", &self.precision)
            .field("writes", &self.out.is_some())
            .finish()
    }
}

impl Logger {
    /// Lines at `min` and above (none with `None`) in `format` to `out`, with milliseconds.
    pub fn new(out: Box<dyn Write + Send>, format: Format, min: Option<Level>) -> Self {
        Logger {
            min,
            format,
            precision: Precision::Millis,
            out: Some(Mutex::new(out)),
        }
    }

    /// [`Logger::new`] to the process's stderr.
    pub fn stderr(format: Format, min: Level) -> Self {
        Logger::new(Box::new(std::io::stderr()), format, Some(min))
    }

    /// A logger that writes nothing.
    pub fn off() -> Self {
        Logger {
            min: None,
            format: Format::Text,
            precision: Precision::Millis,
            out: None,
        }
    }

    /// The same logger with timestamps of `precision`.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Its format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether events at `level` are written (to skip building details nobody reads).
    pub fn enabled(&self, level: Level) -> bool {
        self.out.is_some() && self.min.is_some_and(|m| level >= m)
    }

    /// Write `event` as one line, stamped now, if its level is on.
    pub fn log(&self, event: &Event) {
        if !self.enabled(event.level) {
            return;
        }
        let Some(out) = &self.out else { return };
        let line = event.render(self.format, self.precision, SystemTime::now());
        let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
        // One write per line: lines of concurrent writers to an O_APPEND file stay whole.
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }

    /// Log `msg` at `level`, without fields.
    pub fn at(&self, level: Level, msg: &str) {
        if self.enabled(level) {
            self.log(&Event::new(level, msg));
        }
    }

    /// [`Logger::at`] debug.
    pub fn debug(&self, msg: &str) {
        self.at(Level::Debug, msg);
    }

    /// [`Logger::at`] info.
    pub fn info(&self, msg: &str) {
        self.at(Level::Info, msg);
    }

    /// [`Logger::at`] warn.
    pub fn warn(&self, msg: &str) {
        self.at(Level::Warn, msg);
    }

    /// [`Logger::at`] error.
    pub fn error(&self, msg: &str) {
        self.at(Level::Error, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn at(secs: i64, nanos: u32) -> SystemTime {
        let t = if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        };
        t + Duration::from_nanos(u64::from(nanos))
    }

    /// The seconds were computed with `date -u -d TIME +%s` (GNU coreutils).
    #[test]
    fn timestamps_on_fixed_instants() {
        for (secs, nanos, want) in [
            (0, 0, "1970-01-01T00:00:00.000Z"),
            (1_796_209_137, 123_000_000, "2026-12-02T10:58:57.123Z"),
            // A leap day, its last millisecond (truncated, not rounded up to March).
            (1_709_251_199, 999_999_999, "2024-02-29T23:59:59.999Z"),
            // 2000 is a leap year (divisible by 400); 2100 is not (by 100).
            (951_782_400, 0, "2000-02-29T00:00:00.000Z"),
            (4_107_542_399, 0, "2100-02-28T23:59:59.000Z"),
            (4_107_542_400, 0, "2100-03-01T00:00:00.000Z"),
            // Before the epoch.
            (-2_203_891_200, 0, "1900-03-01T00:00:00.000Z"),
            (-1, 999_000_000, "1969-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(timestamp(at(secs, nanos)), want, "{secs}.{nanos:09}");
        }
        assert_eq!(
            timestamp(UNIX_EPOCH - Duration::from_millis(1)),
            "1969-12-31T23:59:59.999Z"
        );
        assert_eq!(
            timestamp_with(at(1_709_251_199, 999_999_999), Precision::Micros),
            "2024-02-29T23:59:59.999999Z"
        );
        assert_eq!(
            timestamp_with(UNIX_EPOCH, Precision::Micros),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn json_lines_escape_every_special_character() {
        let nasty = "a\"b\\c\nd\te\u{1}f\u{7f}é";
        // JSON escapes quotes, backslashes and U+0000-U+001F; DEL and non-ASCII stay as they are.
        assert_eq!(json_string(nasty), "\"a\\\"b\\\\c\\nd\\te\\u0001f\u{7f}é\"");
        let e = Event::new(Level::Warn, nasty)
            .field("path", nasty)
            .field("n", 7u64);
        let line = e.render(Format::Json, Precision::Millis, UNIX_EPOCH);
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["msg"], nasty);
        assert_eq!(v["path"], nasty);
        assert_eq!(v["n"], 7);
        assert_eq!(v["level"], "warn");
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn json_lines_keep_one_level_time_and_msg() {
        let e = Event::new(Level::Info, "m")
            .field("time", "x")
            .field("msg", "y");
        let line = e.render(Format::Json, Precision::Millis, UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (&v["time"], &v["msg"], &v["_time"], &v["_msg"]),
            (
                &"1970-01-01T00:00:00.000Z".into(),
                &"m".into(),
                &"x".into(),
                &"y".into()
            )
        );
    }

    #[test]
    fn text_lines_are_one_line_with_readable_fields() {
        let e = Event::new(Level::Error, "two\nlines\tand a tab")
            .field("pod", "/run/netns/p1")
            .field("cause", "changed by another process")
            .field("empty", "")
            .field("rules_missing", 2u64);
        assert_eq!(
            e.render(Format::Text, Precision::Millis, UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z\terror\ttwo\\nlines\\tand a tab\t\
             pod=/run/netns/p1 cause=\"changed by another process\" empty=\"\" rules_missing=2\n"
        );
        assert_eq!(
            Event::new(Level::Info, "plain").render(Format::Text, Precision::Micros, UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z\tinfo\tplain\n"
        );
    }

    #[test]
    fn levels_and_formats_parse_as_they_print() {
        for l in Level::ALL {
            assert_eq!(l.name().parse::<Level>(), Ok(l));
        }
        assert!(Level::Debug < Level::Info && Level::Warn < Level::Error);
        assert!("loud".parse::<Level>().unwrap_err().contains("debug, info"));
        for f in [Format::Text, Format::Json] {
            assert_eq!(f.to_string().parse::<Format>(), Ok(f));
        }
        assert!("xml".parse::<Format>().is_err());
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_logger_writes_lines_at_and_above_its_threshold() {
        let buf = Buf::default();
        let log = Logger::new(Box::new(buf.clone()), Format::Text, Some(Level::Warn));
        log.info("hidden");
        log.warn("shown");
        log.error("also shown");
        assert!(!log.enabled(Level::Debug) && log.enabled(Level::Error));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let levels: Vec<&str> = text
            .lines()
            .map(|l| l.split('\t').nth(1).unwrap())
            .collect();
        assert_eq!(levels, ["warn", "error"], "{text}");
        let off = Logger::new(Box::new(buf.clone()), Format::Json, None);
        off.error("nothing");
        assert!(!Logger::off().enabled(Level::Error));
        assert_eq!(buf.0.lock().unwrap().len(), text.len());
    }
}
