//! Logging as Istio's components log (`pkg/log`): a minimum level from `--log_output_level`
//! (`info`, or per scope `default:info`), console lines `TIME\tLEVEL\tMESSAGE` or one JSON
//! object per line with `--log_as_json`, to `--log_target` (stdout, stderr or a file path).

use std::io::Write;
use std::sync::Mutex;

/// A log level, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `debug`.
    Debug,
    /// `info`.
    Info,
    /// `warn`.
    Warn,
    /// `error`.
    Error,
    /// `fatal`.
    Fatal,
    /// `none`: nothing is logged.
    None,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warn" => Level::Warn,
            "error" => Level::Error,
            "fatal" => Level::Fatal,
            "none" => Level::None,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
            Level::None => "none",
        }
    }
}

/// Where and how to log.
pub struct Logger {
    min: Level,
    json: bool,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Logger {
    /// A logger from Istio's flags: `levels` as `--log_output_level` (`LEVEL` or
    /// `SCOPE:LEVEL,...`; the `default` scope, or a bare level, decides), `json` as
    /// `--log_as_json`, `target` as the last `--log_target`.
    pub fn new(levels: &str, json: bool, target: &str) -> Result<Self, String> {
        let mut min = Level::Info;
        for part in levels.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (scope, level) = part.rsplit_once(':').unwrap_or(("default", part));
            let level = Level::parse(level).ok_or_else(|| {
                format!("--log_output_level: invalid level {level:?} in {part:?}")
            })?;
            if scope == "default" || scope == "all" {
                min = level;
            }
        }
        let out: Box<dyn Write + Send> = match target {
            "" | "stdout" => Box::new(std::io::stdout()),
            "stderr" => Box::new(std::io::stderr()),
            path => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("--log_target {path}: {e}"))?,
            ),
        };
        Ok(Logger {
            min,
            json,
            out: Mutex::new(out),
        })
    }

    /// Log `msg` at `level`, if the level is on.
    pub fn log(&self, level: Level, msg: &str) {
        if level < self.min || self.min == Level::None {
            return;
        }
        let time = utc_now();
        let line = if self.json {
            format!(
                "{{\"level\":\"{}\",\"time\":\"{time}\",\"msg\":{}}}\n",
                level.name(),
                json_string(msg)
            )
        } else {
            format!("{time}\t{}\t{msg}\n", level.name())
        };
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }

    /// [`Logger::log`] at info.
    pub fn info(&self, msg: &str) {
        self.log(Level::Info, msg);
    }

    /// [`Logger::log`] at warn.
    pub fn warn(&self, msg: &str) {
        self.log(Level::Warn, msg);
    }

    /// [`Logger::log`] at error.
    pub fn error(&self, msg: &str) {
        self.log(Level::Error, msg);
    }
}

/// `msg` as a JSON string literal.
fn json_string(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len() + 2);
    out.push('"');
    for c in msg.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The current time as RFC 3339 UTC with microseconds, as Istio's logs print it.
fn utc_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_as_istio_spells_them() {
        for (flag, min) in [
            ("default:info", Level::Info),
            ("debug", Level::Debug),
            ("ads:debug,default:warn", Level::Warn),
            ("none", Level::None),
        ] {
            assert_eq!(
                Logger::new(flag, false, "stderr").unwrap().min,
                min,
                "{flag}"
            );
        }
        assert!(Logger::new("default:loud", false, "stderr").is_err());
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
    }

    #[test]
    fn time_is_rfc3339_utc() {
        let t = utc_now();
        assert_eq!(t.len(), "2026-12-01T08:00:00.000000Z".len(), "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
