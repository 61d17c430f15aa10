//! Kubernetes resource quantities (`500m`, `4`, `16Gi`, `1e3`) as integers: CPU in
//! millicores, everything else in units.

/// The value of `q` times 1000 (CPU millicores from `"2"` or `"500m"`), rounded up as the
/// scheduler rounds requests.
pub fn milli(q: &str) -> Option<i64> {
    parse(q).map(|v| (v * 1000.0).ceil() as i64)
}

/// The value of `q` in units (bytes for memory, a count for pods).
pub fn units(q: &str) -> Option<i64> {
    parse(q).map(|v| v.ceil() as i64)
}

fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("Pi", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = q.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    q.parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(milli("500m"), Some(500));
        assert_eq!(milli("2"), Some(2000));
        assert_eq!(milli("0.1"), Some(100));
        assert_eq!(units("16Gi"), Some(16 << 30));
        assert_eq!(units("128974848"), Some(128974848));
        assert_eq!(units("129e6"), Some(129_000_000));
        assert_eq!(units("1k"), Some(1000));
        assert_eq!(units("x"), None);
    }
}
