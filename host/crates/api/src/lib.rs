//! Kiosk's HTTP contract as Rust types: the documents the API takes and returns, with
//! their OpenAPI schemas (utoipa). The core's use cases return these where the API
//! shows their result as is; the server serves them; clients (the test suite's, `kiosk
//! admin`) read them. No behaviour here: no I/O, no validation beyond serde's.
//!
//! Wire rules every type keeps: camelCase member names; times are `…Ms` (ms since the
//! Unix epoch); text holds no U+0000 (PostgreSQL cannot store it; every backend refuses
//! it alike).

pub mod private_apps;
pub mod registries;
pub mod trust;
pub mod usage;

/// An optional integer member of a body: JSON has one number type, so an integral
/// number written with a fraction or exponent (`5.0`, `1e3`) is that integer when it is
/// exact (|n| ≤ 2^53); any other fraction, or a number out of the `i64` range, is refused.
pub fn optional_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::Deserialize as _;
    use serde::de::Error;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else { return Ok(None) };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() <= EXACT => Ok(Some(f as i64)),
        _ => Err(D::Error::custom(format!("invalid value: {n}, expected an integer in the i64 range"))),
    }
}
