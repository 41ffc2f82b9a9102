//! Logging as Istio's components log (`pkg/log`): a minimum level from `--log_output_level`
//! (`info`, or per scope `default:info`), console lines `TIME\tLEVEL\tMESSAGE` or one JSON
//! object per line with `--log_as_json`, to `--log_target` (stdout, stderr or a file path).
//! The lines are [`nftmesh::log`]'s, the one format of nftmesh's binaries, with Istio's
//! microsecond timestamps (`2026-12-02T10:58:57.123456Z`): this is the `istio-iptables`
//! drop-in, and log pipelines built for istio-init's output keep reading it unchanged.

pub use nftmesh::log::Level;
use nftmesh::log::{Format, Precision};
use std::io::Write;

/// Where and how to log.
pub struct Logger(nftmesh::log::Logger);

/// Istio's level names: `fatal` and `none` log nothing here (nftmesh logs nothing at fatal).
fn threshold(s: &str) -> Option<Option<Level>> {
    match s {
        "fatal" | "none" => Some(None),
        other => other.parse().ok().map(Some),
    }
}

impl Logger {
    /// A logger from Istio's flags: `levels` as `--log_output_level` (`LEVEL` or
    /// `SCOPE:LEVEL,...`; the `default` scope, or a bare level, decides), `json` as
    /// `--log_as_json`, `target` as the last `--log_target`.
    pub fn new(levels: &str, json: bool, target: &str) -> Result<Self, String> {
        let mut min = Some(Level::Info);
        for part in levels.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (scope, level) = part.rsplit_once(':').unwrap_or(("default", part));
            let level = threshold(level).ok_or_else(|| {
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
        let format = if json { Format::Json } else { Format::Text };
        Ok(Logger(
            nftmesh::log::Logger::new(out, format, min).with_precision(Precision::Micros),
        ))
    }

    /// Log `msg` at `level`, if the level is on.
    pub fn log(&self, level: Level, msg: &str) {
        self.0.at(level, msg);
    }

    /// [`Logger::log`] at info.
    pub fn info(&self, msg: &str) {
        self.0.info(msg);
    }

    /// [`Logger::log`] at warn.
    pub fn warn(&self, msg: &str) {
        self.0.warn(msg);
    }

    /// [`Logger::log`] at error.
    pub fn error(&self, msg: &str) {
        self.0.error(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_as_istio_spells_them() {
        for (flag, debug, info, warn, error) in [
            ("default:info", false, true, true, true),
            ("debug", true, true, true, true),
            ("ads:debug,default:warn", false, false, true, true),
            ("default:fatal", false, false, false, false),
            ("none", false, false, false, false),
        ] {
            let log = Logger::new(flag, false, "stderr").unwrap();
            let on = |l| log.0.enabled(l);
            assert_eq!(
                (
                    on(Level::Debug),
                    on(Level::Info),
                    on(Level::Warn),
                    on(Level::Error)
                ),
                (debug, info, warn, error),
                "{flag}"
            );
        }
        assert!(Logger::new("default:loud", false, "stderr").is_err());
    }

    #[test]
    fn lines_are_istios_layout_with_microseconds() {
        let path = std::env::temp_dir().join(format!("nftmesh-log-test-{}", std::process::id()));
        let log = Logger::new("info", false, path.to_str().unwrap()).unwrap();
        log.info("Applying the capture");
        log.log(Level::Debug, "hidden");
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let fields: Vec<&str> = text.trim_end().split('\t').collect();
        assert_eq!(fields[1..], ["info", "Applying the capture"], "{text}");
        // 2026-12-01T08:00:00.000000Z: RFC 3339 UTC with six fraction digits.
        let t = fields[0];
        assert_eq!(t.len(), 27, "{t}");
        assert_eq!((&t[10..11], &t[19..20], &t[26..]), ("T", ".", "Z"), "{t}");
        assert!(t[20..26].bytes().all(|b| b.is_ascii_digit()), "{t}");
    }
}
