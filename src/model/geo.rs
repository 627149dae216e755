//! Where the caller is. The edge shell fills a [`Caller`] from Cloudflare's `request.cf`
//! (or, only where `TRUST_GEO_HEADERS` is on, from the `x-gateway-geo-*` headers); the
//! residency rules read nothing else.

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

    /// The caller as `request.cf` would describe someone in `country`, from the country
    /// alone: for the trusted `x-gateway-geo-*` headers, whose caller would otherwise have
    /// no continent and no location. An explicit `continent` wins.
    pub fn stand_in(country: &str, continent: Option<&str>) -> Caller {
        let code = country.trim().to_ascii_uppercase();
        let known = crate::model::countries::lookup(&code);
        let continent = continent.or(known.map(|(c, _)| c));
        Caller { location: known.and_then(|(_, l)| l), ..Caller::new(Some(&code), continent, None) }
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

impl CfFields {
    /// The fields read, by their names in `request.cf`: the shell copies only these out
    /// of the runtime's object (it has some thirty).
    pub const NAMES: [&'static str; 7] =
        ["country", "continent", "isEUCountry", "regionCode", "latitude", "longitude", "colo"];

    /// The fields as the shell copies them: a line per name of [`NAMES`](Self::NAMES), in
    /// order, `s` and a string's text, `n` and a number's, empty when absent. `None` when
    /// a line is neither, or a number stands where only a string is read.
    pub fn from_lines(text: &str) -> Option<CfFields> {
        let mut lines = text.split('\n');
        let mut read = [(); 7].map(|_| {
            lines.next().map(|line| match line {
                "" => Some(None),
                _ => match line.strip_prefix('s') {
                    Some(s) => Some(Some(StrOrNum::Str(s.to_string()))),
                    None => Some(Some(StrOrNum::Num(line.strip_prefix('n')?.parse().ok()?))),
                },
            })
        });
        if lines.next().is_some() {
            return None;
        }
        let mut field = |i: usize| read[i].take().flatten();
        let text = |v: Option<Option<StrOrNum>>| match v? {
            Some(StrOrNum::Str(s)) => Some(Some(s)),
            Some(StrOrNum::Num(_)) => None,
            None => Some(None),
        };
        Some(CfFields {
            country: text(field(0))?,
            continent: text(field(1))?,
            is_eu_country: text(field(2))?,
            region_code: text(field(3))?,
            latitude: field(4)?,
            longitude: field(5)?,
            colo: text(field(6))?,
        })
    }
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
    fn a_country_alone_stands_in_for_what_request_cf_would_say() {
        let jp = Caller::stand_in("jp", None);
        assert_eq!((jp.country.as_deref(), jp.continent.as_deref(), jp.eu), (Some("JP"), Some("AS"), Some(false)));
        let [lat, lon] = jp.location.expect("a representative location");
        assert!(distance_km([lat, lon], [35.68, 139.69]) < 100.0, "Tokyo: {lat}, {lon}");
        let no = Caller::stand_in("NO", None);
        assert_eq!((no.continent.as_deref(), no.eu), (Some("EU"), Some(false)), "Norway: Europe, not the EU");
        assert_eq!(Caller::stand_in("DE", None).eu, Some(true));
        let given = Caller::stand_in("US", Some("EU"));
        assert_eq!(given.continent.as_deref(), Some("EU"), "an explicit continent header wins");
        let aq = Caller::stand_in("AQ", None);
        assert_eq!((aq.continent.as_deref(), aq.location), (Some("AN"), None));
        let unknown = Caller::stand_in("XX", None);
        assert_eq!((unknown.continent.as_deref(), unknown.location, unknown.location_known()), (None, None, false));
    }

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

    /// The shell's lines for a `request.cf` of these fields: `s` strings, `n` numbers.
    fn cf(fields: &[(&str, &str)]) -> Option<CfFields> {
        let line = |name: &str| fields.iter().find(|(n, _)| *n == name).map_or("", |(_, v)| *v);
        CfFields::from_lines(&CfFields::NAMES.map(line).join("\n"))
    }

    #[test]
    fn reads_request_cf_leniently() {
        let frankfurt = [("country", "sDE"), ("continent", "sEU"), ("isEUCountry", "s1"), ("colo", "sFRA")];
        let c = Caller::from(cf(&[&frankfurt[..], &[("latitude", "s50.1"), ("longitude", "n8.7")]].concat()).unwrap());
        assert_eq!((c.country.as_deref(), c.eu, c.location), (Some("DE"), Some(true), Some([50.1, 8.7])));
        assert_eq!(c.colo.as_deref(), Some("FRA"));
        let c = Caller::from(cf(&[("country", "sUS"), ("latitude", "snorth")]).unwrap());
        assert_eq!((c.eu, c.location), (Some(false), None));
        assert_eq!(Caller::from(cf(&[]).unwrap()), Caller::default());
        // The runtime's flag is read, and wins over the member list.
        assert_eq!(Caller::from(cf(&[("country", "sGB"), ("isEUCountry", "s1")]).unwrap()).eu, Some(true));
        let c = Caller::from(cf(&[("regionCode", "sBY"), ("latitude", "n-3"), ("longitude", "n18.5")]).unwrap());
        assert_eq!((c.region_code.as_deref(), c.location), (Some("BY"), Some([-3.0, 18.5])));
        for wrong in [("country", "n3"), ("latitude", "nnorth"), ("longitude", "x1"), ("colo", "n1")] {
            assert_eq!(cf(&[wrong]), None, "{wrong:?}");
        }
        for short in ["", "sDE\nsEU", "\n\n\n\n\n"] {
            assert_eq!(CfFields::from_lines(short), None, "{short:?}");
        }
    }

    #[test]
    fn names_every_field_it_reads() {
        let all = CfFields::NAMES.map(|n| (n, if n.ends_with("itude") { "n1" } else { "s1" }));
        let read = cf(&all).unwrap();
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
