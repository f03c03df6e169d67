//! The UI's languages: Vietnamese and English, one Fluent catalogue each
//! (`locales/{en,vi}/main.ftl`, compiled in), chosen by the `tramy_lang` cookie, else by the
//! browser's `Accept-Language` (RFC 9110 12.5.4), else English. Dates and numbers are written
//! the way each language's readers write them: vi `31/01/2024` and `0,87`; en `2024-01-31` and
//! `0.87`.

use std::borrow::Cow;
use std::collections::HashMap;

use axum::http::{header, HeaderMap};
use fluent_templates::fluent_bundle::FluentValue;
use fluent_templates::{static_loader, LanguageIdentifier, Loader};

static_loader! {
    static LOCALES = {
        locales: "./src/web/ui/locales",
        fallback_language: "en",
        // No Unicode isolation marks around arguments: they are numbers, shown in the page.
        customise: |bundle| bundle.set_use_isolating(false),
    };
}

/// The cookie that keeps a chosen language.
pub const LANG_COOKIE: &str = "tramy_lang";

/// A language of the UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English.
    En,
    /// Vietnamese.
    Vi,
}

impl Lang {
    /// Its BCP 47 tag, as in `<html lang>` and the cookie.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Vi => "vi",
        }
    }

    /// The other language (the switch link on every page goes there).
    pub fn other(self) -> Lang {
        match self {
            Lang::En => Lang::Vi,
            Lang::Vi => Lang::En,
        }
    }

    /// The language a tag names (`vi`, `vi-VN`, `en-GB`…); `None` for any other.
    pub fn parse(tag: &str) -> Option<Lang> {
        let id: LanguageIdentifier = tag.trim().parse().ok()?;
        match id.language.as_str() {
            "vi" => Some(Lang::Vi),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The request's language: its `tramy_lang` cookie, else the first of its `Accept-Language`
    /// languages the UI speaks, else English.
    pub fn of(headers: &HeaderMap) -> Lang {
        cookie(headers, LANG_COOKIE)
            .and_then(Lang::parse)
            .or_else(|| {
                let accepted = headers
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())?;
                // Sorted by quality; "*" and unknown tags are skipped.
                fluent_langneg::accepted_languages::parse(accepted)
                    .iter()
                    .find_map(|id| Lang::parse(&id.to_string()))
            })
            .unwrap_or(Lang::En)
    }

    fn id(self) -> LanguageIdentifier {
        match self {
            Lang::En => fluent_templates::langid!("en"),
            Lang::Vi => fluent_templates::langid!("vi"),
        }
    }

    /// The message `key` in this language.
    pub fn t(self, key: &str) -> String {
        LOCALES.lookup(&self.id(), key)
    }

    /// The message `key` with its `count` argument.
    pub fn count(self, key: &str, count: i64) -> String {
        let args: HashMap<Cow<'static, str>, FluentValue> =
            HashMap::from([(Cow::Borrowed("count"), FluentValue::from(count))]);
        LOCALES.lookup_with_args(&self.id(), key, &args)
    }

    /// `x` with `decimals` decimals and this language's decimal mark.
    pub fn number(self, x: f64, decimals: usize) -> String {
        let text = format!("{x:.decimals$}");
        match self {
            Lang::En => text,
            Lang::Vi => text.replace('.', ","),
        }
    }

    /// A DICOM date (DA, `YYYYMMDD`, PS3.5 6.2) as this language writes dates; anything else
    /// as it is.
    pub fn dicom_date(self, da: &str) -> String {
        match chrono::NaiveDate::parse_from_str(da.trim(), "%Y%m%d") {
            Ok(date) => self.date(date),
            Err(_) => da.to_string(),
        }
    }

    /// An RFC 3339 time (when a study arrived) as this language writes a date and a time, in
    /// UTC; anything else as it is.
    pub fn timestamp(self, rfc3339: &str) -> String {
        match chrono::DateTime::parse_from_rfc3339(rfc3339) {
            Ok(t) => {
                let t = t.with_timezone(&chrono::Utc);
                format!("{} {} UTC", self.date(t.date_naive()), t.format("%H:%M"))
            }
            Err(_) => rfc3339.to_string(),
        }
    }

    fn date(self, date: chrono::NaiveDate) -> String {
        let format = match self {
            Lang::En => "%Y-%m-%d",
            Lang::Vi => "%d/%m/%Y",
        };
        date.format(format).to_string()
    }
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ftl: &str) -> std::collections::BTreeSet<&str> {
        ftl.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with(' '))
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
            .collect()
    }

    #[test]
    fn both_catalogues_have_the_same_messages() {
        let en = include_str!("locales/en/main.ftl");
        let vi = include_str!("locales/vi/main.ftl");
        assert_eq!(keys(en), keys(vi));
        for key in keys(en) {
            assert!(
                !Lang::Vi.count(key, 1).starts_with("Unknown localization"),
                "{key}"
            );
        }
    }

    #[test]
    fn the_language_comes_from_the_cookie_then_accept_language_then_english() {
        let headers = |pairs: &[(header::HeaderName, &str)]| {
            let mut h = HeaderMap::new();
            for (name, value) in pairs {
                h.append(name, value.parse().unwrap());
            }
            h
        };
        let vi_first = (header::ACCEPT_LANGUAGE, "vi-VN,vi;q=0.9,en;q=0.5");
        assert_eq!(
            Lang::of(&headers(std::slice::from_ref(&vi_first))),
            Lang::Vi
        );
        assert_eq!(
            Lang::of(&headers(&[(
                header::ACCEPT_LANGUAGE,
                "fr, en;q=0.3, vi;q=0.2"
            )])),
            Lang::En
        );
        assert_eq!(
            Lang::of(&headers(&[
                vi_first,
                (header::COOKIE, "a=b; tramy_lang=en")
            ])),
            Lang::En
        );
        assert_eq!(
            Lang::of(&headers(&[(header::ACCEPT_LANGUAGE, "fr")])),
            Lang::En
        );
        assert_eq!(Lang::of(&HeaderMap::new()), Lang::En);
    }

    #[test]
    fn dates_and_numbers_are_written_per_language() {
        assert_eq!(Lang::Vi.dicom_date("20240131"), "31/01/2024");
        assert_eq!(Lang::En.dicom_date("20240131"), "2024-01-31");
        assert_eq!(Lang::En.dicom_date(""), "");
        assert_eq!(Lang::Vi.number(0.8734, 2), "0,87");
        assert_eq!(Lang::En.number(0.8734, 2), "0.87");
        assert_eq!(
            Lang::Vi.timestamp("2024-01-31T08:05:00+07:00"),
            "31/01/2024 01:05 UTC"
        );
        assert_eq!(Lang::Vi.count("note-pending", 3), "Việc AI đang chờ: 3");
    }
}
