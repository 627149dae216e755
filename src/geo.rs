//! Where the caller is. The edge shell fills a [`Caller`] from Cloudflare's `request.cf`
//! (or, only where `TRUST_GEO_HEADERS` is on, from the `x-gateway-geo-*` headers); the
//! residency rules read nothing else.

use crate::valueread::{invalid_type, At, Fields, FromValue};
use serde_json::Value;

/// ISO 3166-1 alpha-2 codes of the EU member states, for callers whose EU membership is
/// not given by `request.cf` (the trusted-header path).
const EU_MEMBERS: &[&str] = &[
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT", "LT", "LU", "LV",
    "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Caller {
    pub country: Option<String>,
    pub continent: Option<String>,
    pub eu: Option<bool>,
    pub region_code: Option<String>,
    /// Latitude and longitude.
    pub location: Option<[f64; 2]>,
    pub colo: Option<String>,
}

impl Caller {
    /// Builds a caller from raw `request.cf`-style fields, normalising case and treating
    /// empty strings as absent.
    pub fn new(country: Option<&str>, continent: Option<&str>, eu: Option<bool>) -> Caller {
        let clean = |s: Option<&str>| s.map(str::trim).filter(|s| !s.is_empty()).map(str::to_ascii_uppercase);
        let country = clean(country);
        let eu = eu.or_else(|| country.as_deref().filter(|c| is_real_country(c)).map(is_eu_member));
        Caller { country, continent: clean(continent), eu, ..Caller::default() }
    }

    /// False for a missing country and for Cloudflare's placeholders: `XX` (unknown) and
    /// `T1` (Tor), where no location condition can be trusted.
    pub fn location_known(&self) -> bool {
        self.country.as_deref().is_some_and(is_real_country)
    }

    /// `DE/EU`, `XX/-`: how the caller is shown in receipts and logs.
    pub fn label(&self) -> String {
        format!("{}/{}", self.country.as_deref().unwrap_or("-"), self.continent.as_deref().unwrap_or("-"))
    }
}

/// The `request.cf` fields residency reads, as the runtime gives them (strings, with
/// `isEUCountry` as `"1"`); read leniently, since a missing field must not fail a request:
/// other fields ignored, a field of another type fails all.
#[derive(Debug, Default, PartialEq)]
pub struct CfFields {
    country: Option<String>,
    continent: Option<String>,
    is_eu_country: Option<String>,
    region_code: Option<String>,
    latitude: Option<StrOrNum>,
    longitude: Option<StrOrNum>,
    colo: Option<String>,
}

#[derive(Debug, PartialEq)]
enum StrOrNum {
    Num(f64),
    Str(String),
}

impl FromValue for StrOrNum {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        match v {
            Value::Number(n) => Ok(StrOrNum::Num(n.as_f64().unwrap_or_default())),
            Value::String(s) => Ok(StrOrNum::Str(s.clone())),
            _ => Err(invalid_type(v, at, "a number or a string")),
        }
    }
}

impl FromValue for CfFields {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::any(v, at)?;
        Ok(CfFields {
            country: f.opt("country")?,
            continent: f.opt("continent")?,
            is_eu_country: f.opt("isEUCountry")?,
            region_code: f.opt("regionCode")?,
            latitude: f.opt("latitude")?,
            longitude: f.opt("longitude")?,
            colo: f.opt("colo")?,
        })
    }
}

impl CfFields {
    /// The fields read, by their names in `request.cf`: the shell copies only these out
    /// of the runtime's object (it has some thirty).
    pub const NAMES: [&'static str; 7] =
        ["country", "continent", "isEUCountry", "regionCode", "latitude", "longitude", "colo"];
}

impl StrOrNum {
    fn value(&self) -> Option<f64> {
        match self {
            StrOrNum::Num(n) => Some(*n),
            StrOrNum::Str(s) => s.trim().parse().ok(),
        }
    }
}

impl From<CfFields> for Caller {
    fn from(cf: CfFields) -> Caller {
        let eu = cf.is_eu_country.as_deref().map(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        let location = match (cf.latitude.and_then(|v| v.value()), cf.longitude.and_then(|v| v.value())) {
            (Some(lat), Some(lon)) if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) => {
                Some([lat, lon])
            }
            _ => None,
        };
        Caller {
            region_code: cf.region_code.filter(|s| !s.is_empty()),
            location,
            colo: cf.colo.filter(|s| !s.is_empty()),
            ..Caller::new(cf.country.as_deref(), cf.continent.as_deref(), eu)
        }
    }
}

fn is_real_country(code: &str) -> bool {
    code.len() == 2 && code != "XX" && code != "T1" && code.bytes().all(|b| b.is_ascii_uppercase())
}

pub fn is_eu_member(country: &str) -> bool {
    EU_MEMBERS.contains(&country)
}

/// Great-circle distance in kilometres (haversine, mean Earth radius).
pub fn distance_km(a: [f64; 2], b: [f64; 2]) -> f64 {
    use trig::{asin, cos, sin};
    let [lat1, lon1] = a.map(f64::to_radians);
    let [lat2, lon2] = b.map(f64::to_radians);
    let h = sin((lat2 - lat1) / 2.0).powi(2) + cos(lat1) * cos(lat2) * sin((lon2 - lon1) / 2.0).powi(2);
    2.0 * 6371.0 * asin(h.sqrt().min(1.0))
}

/// In the worker, the runtime's own `Math` functions (fdlibm, as Rust's libm is): the
/// wasm then carries no copy of them (about 9 KB with their argument reduction).
#[cfg(target_arch = "wasm32")]
mod trig {
    pub use worker::js_sys::Math::{asin, cos, sin};
}

#[cfg(not(target_arch = "wasm32"))]
mod trig {
    pub fn sin(x: f64) -> f64 {
        x.sin()
    }
    pub fn cos(x: f64) -> f64 {
        x.cos()
    }
    pub fn asin(x: f64) -> f64 {
        x.asin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_derives_eu_membership() {
        let c = Caller::new(Some("de"), Some(" eu "), None);
        assert_eq!(c.country.as_deref(), Some("DE"));
        assert_eq!(c.continent.as_deref(), Some("EU"));
        assert_eq!(c.eu, Some(true));
        assert_eq!(Caller::new(Some("CH"), None, None).eu, Some(false));
        assert_eq!(Caller::new(Some("CH"), None, Some(true)).eu, Some(true));
        assert_eq!(Caller::new(Some(""), None, None).country, None);
    }

    #[test]
    fn placeholders_are_unknown_locations() {
        for code in ["XX", "T1", "", "x", "DEU"] {
            let c = Caller::new(Some(code), None, None);
            assert!(!c.location_known(), "{code}");
            assert_eq!(c.eu, None, "{code}");
        }
        assert!(Caller::new(Some("JP"), None, None).location_known());
        assert_eq!(Caller::default().label(), "-/-");
    }

    fn cf(json: &str) -> Result<CfFields, String> {
        CfFields::read(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn reads_request_cf_leniently() {
        let c = Caller::from(
            cf(r#"{"country":"DE","continent":"EU","isEUCountry":"1","colo":"FRA","latitude":"50.1","longitude":8.7,"asn":3320}"#)
                .unwrap(),
        );
        assert_eq!((c.country.as_deref(), c.eu, c.location), (Some("DE"), Some(true), Some([50.1, 8.7])));
        assert_eq!(c.colo.as_deref(), Some("FRA"));
        let c = Caller::from(cf(r#"{"country":"US","latitude":"north"}"#).unwrap());
        assert_eq!((c.eu, c.location), (Some(false), None));
        assert_eq!(Caller::from(CfFields::default()), Caller::default());
        // The runtime's flag is read, and wins over the member list.
        assert_eq!(Caller::from(cf(r#"{"country":"GB","isEUCountry":"1"}"#).unwrap()).eu, Some(true));
        let c = Caller::from(cf(r#"{"regionCode":"BY","latitude":-3,"longitude":18.5}"#).unwrap());
        assert_eq!((c.region_code.as_deref(), c.location), (Some("BY"), Some([-3.0, 18.5])));
        for wrong in [r#"{"country":3}"#, r#"{"latitude":true}"#, r#"{"longitude":[1]}"#, "null", "7"] {
            assert!(cf(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn names_every_field_it_reads() {
        let all: serde_json::Map<String, Value> =
            CfFields::NAMES.iter().map(|n| (n.to_string(), Value::from("1"))).collect();
        let read = CfFields::read(&Value::Object(all)).unwrap();
        assert!(read.country.is_some() && read.continent.is_some() && read.is_eu_country.is_some());
        assert!(
            read.region_code.is_some() && read.latitude.is_some() && read.longitude.is_some() && read.colo.is_some()
        );
    }

    #[test]
    fn distances_are_plausible() {
        let frankfurt = [50.11, 8.68];
        let paris = [48.86, 2.35];
        let tokyo = [35.68, 139.69];
        assert!((distance_km(frankfurt, paris) - 479.0).abs() < 10.0);
        assert!((distance_km(frankfurt, tokyo) - 9340.0).abs() < 60.0);
        assert_eq!(distance_km(tokyo, tokyo), 0.0);
        let antipode = distance_km([0.0, 0.0], [0.0, 180.0]);
        assert!((antipode - 20015.0).abs() < 5.0);
    }
}
