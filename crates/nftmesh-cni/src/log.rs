//! The plugin's log: one line per event appended to `log_file`, at or above `log_level`, in
//! `log_format` (nftmesh's one log format, [`nftmesh::log`]: RFC 3339 UTC with milliseconds,
//! text or JSON), each line naming the command and the container. Logging never fails a
//! command: a log file that cannot be opened or written is left alone (the command's result
//! on stdout is what the runtime acts on).

use crate::config::LogSettings;
use nftmesh::log::{Event, Level, Logger};

/// Where and how much to log; logs nothing without a file.
#[derive(Debug)]
pub struct Log {
    logger: Logger,
    /// `CNI_COMMAND` of the command being run.
    command: String,
    /// `CNI_CONTAINERID`, or `-`.
    container_id: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            logger: Logger::off(),
            command: String::new(),
            container_id: "-".into(),
        }
    }
}

impl Log {
    /// A log as `settings` say, its lines labelled with `command` and `container_id`.
    pub fn new(settings: &LogSettings, command: &str, container_id: Option<&str>) -> Self {
        let file = settings.file.as_ref().and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        });
        Log {
            logger: match file {
                Some(f) => Logger::new(Box::new(f), settings.format, Some(settings.level)),
                None => Logger::off(),
            },
            command: command.to_string(),
            container_id: container_id.unwrap_or("-").to_string(),
        }
    }

    /// Whether lines at `level` are written.
    pub fn enabled(&self, level: Level) -> bool {
        self.logger.enabled(level)
    }

    /// Append `message` at `level`, with the command and container, and `fields`.
    pub fn event(&self, level: Level, message: &str, fields: &[(&'static str, &str)]) {
        if !self.enabled(level) {
            return;
        }
        let mut e = Event::new(level, message)
            .field("command", self.command.as_str())
            .field("container_id", self.container_id.as_str());
        for (k, v) in fields {
            e = e.field(k, *v);
        }
        self.logger.log(&e);
    }

    /// Append `message` at `level`.
    pub fn at(&self, level: Level, message: &str) {
        self.event(level, message, &[]);
    }

    /// [`Log::at`] `Info`.
    pub fn info(&self, message: &str) {
        self.at(Level::Info, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftmesh::log::Format;

    #[test]
    fn lines_name_the_command_and_container_and_an_unwritable_file_is_ignored() {
        let path = std::env::temp_dir().join(format!("nftmesh-cni-log-{}", std::process::id()));
        let settings = LogSettings {
            file: Some(path.clone()),
            level: Level::Warn,
            format: Format::Text,
        };
        let log = Log::new(&settings, "ADD", Some("c1"));
        log.info("hidden below warn");
        log.at(Level::Error, "failed:\ntwo lines");
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let cols: Vec<&str> = text.strip_suffix('\n').unwrap().split('\t').collect();
        assert_eq!(
            cols[1..],
            [
                "error",
                "failed:\\ntwo lines",
                "command=ADD container_id=c1"
            ],
            "{text}"
        );
        assert_eq!(cols[0].len(), "2026-12-02T10:58:57.123Z".len(), "{text}");
        let nowhere = LogSettings {
            file: Some("/nonexistent-dir/x.log".into()),
            ..settings
        };
        let log = Log::new(&nowhere, "DEL", None);
        assert!(!log.enabled(Level::Error));
        log.at(Level::Error, "dropped");
    }
}
