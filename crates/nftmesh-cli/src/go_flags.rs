//! Values as Go's `flag` and `strconv` packages read them, since Istio's flags and environment
//! variables are Go's: booleans (`strconv.ParseBool`) and durations (`time.ParseDuration`).
//! Used by the capture flags and by the `istio-iptables` drop-in.

use std::time::Duration;

/// Go's `strconv.ParseBool`, as Istio reads its boolean environment variables.
pub fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A boolean flag's value as Go's flag package takes it (`--flag`, `--flag=true`, `--flag=0`).
pub fn go_bool_arg(v: &str) -> Result<bool, String> {
    go_bool(v).ok_or_else(|| format!("invalid boolean {v:?}"))
}

/// A Go duration (`time.ParseDuration`): decimal numbers with units ns, us, µs, ms, s, m, h,
/// e.g. `5s`, `1.5s`, `1m30s`, `500ms`; `0` alone.
pub fn go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_go_parses_them() {
        for (s, ms) in [
            ("5s", 5000),
            ("500ms", 500),
            ("1m30s", 90_000),
            ("1.5s", 1500),
            ("2h", 7_200_000),
            ("0", 0),
        ] {
            assert_eq!(go_duration(s).unwrap(), Duration::from_millis(ms), "{s}");
        }
        for s in ["", "5", "s", "5x", "1..2s", "-1s"] {
            assert!(go_duration(s).is_err(), "{s}");
        }
    }

    #[test]
    fn booleans_parse_as_go_parses_them() {
        assert_eq!(go_bool("True"), Some(true));
        assert_eq!(go_bool("0"), Some(false));
        assert_eq!(go_bool("yes"), None);
        assert_eq!(go_bool_arg("t"), Ok(true));
        assert_eq!(go_bool_arg("yes"), Err("invalid boolean \"yes\"".into()));
    }
}
