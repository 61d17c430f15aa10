//! Durations as Kubernetes components write them in flags and files.

use std::time::Duration;

/// Durations as Kubernetes flags write them: `90s`, `5m`, `1h`, `1h30m`.
pub fn parse(s: &str) -> Result<Duration, String> {
    let mut total = 0f64;
    let mut number = String::new();
    let mut rest = s;
    if s.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        number.clear();
        number.push_str(&rest[..digits]);
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let n: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        total += n * match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("invalid duration {s:?}: unit {unit:?}")),
        };
    }
    if total <= 0.0 {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("90s").unwrap(), Duration::from_secs(90));
        assert!(parse("0s").is_err());
        assert!(parse("5x").is_err());
    }
}
