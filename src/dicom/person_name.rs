//! Person names (VR PN, PS3.5 6.2) as people type them: the folded words that accent- and
//! case-insensitive matching compares (PS3.4 C.2.2.2.1 lets an SCP match PN "insensitive to some
//! or all aspects of case, position, accent, or other character encoding variants"), so
//! `Nguyễn^Văn An` (UTF-8), `NGUYEN^VAN AN` (Latin-1) and `Nguyen Van An` share the words
//! `nguyen`, `van`, `an`.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// `text` with its diacritics dropped and its case folded: canonical decomposition (NFD), the
/// combining marks removed (`ễ` → `e`), lower case. `đ`/`Đ` have no decomposition in Unicode
/// (the stroke is part of the letter), so they are mapped to `d` here; so are `ð`/`Ð`, which
/// Latin-1 systems (ISO_IR 100 has no `Đ`) type in their place.
pub fn fold(text: &str) -> String {
    text.nfd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(|c| match c {
            'đ' | 'Đ' | 'ð' | 'Ð' => 'd'.to_lowercase(),
            other => other.to_lowercase(),
        })
        .collect()
}

/// The distinct folded words of a stored name, sorted: every component group (alphabetic,
/// ideographic, phonetic) and component, split at anything but letters and digits.
pub fn name_words(name: &str) -> Vec<String> {
    let mut words: Vec<String> = fold(name)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    words.sort();
    words.dedup();
    words
}

/// The name as one comparable key, whatever the component order, accents or case:
/// `Nguyễn^Văn An` and `NGUYEN VAN AN` both give `an nguyen van`. Empty for an empty name.
pub fn name_key(name: &str) -> String {
    name_words(name).join(" ")
}

/// The most words a name query may have: a name has at most 5 components in 3 groups, and each
/// word costs the search an index lookup.
pub const MAX_QUERY_WORDS: usize = 16;

/// The folded words of a query value, each to be found as a word prefix; DICOM's wildcards
/// `*` and `?` (PS3.4 C.2.2.2.4) are kept within a word.
pub fn query_words(value: &str) -> Vec<String> {
    fold(value)
        .split(|c: char| !(c.is_alphanumeric() || c == '*' || c == '?'))
        .filter(|w| !w.is_empty() && w.chars().any(|c| c != '*'))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vietnamese_diacritics_and_case_fold_away() {
        assert_eq!(fold("Nguyễn^Văn An"), "nguyen^van an");
        assert_eq!(fold("ĐẶNG Thị Ngọc Hân"), "dang thi ngoc han");
        assert_eq!(fold("Trần Đức Ðạt"), "tran duc dat");
    }

    #[test]
    fn the_same_person_typed_three_ways_has_one_key() {
        let key = name_key("Nguyễn^Văn An");
        assert_eq!(key, "an nguyen van");
        assert_eq!(name_key("NGUYEN^VAN AN"), key);
        assert_eq!(name_key("Nguyen Van An"), key);
        assert_eq!(name_key(""), "");
    }

    #[test]
    fn words_are_split_at_component_and_group_separators() {
        assert_eq!(
            name_words("Yamada^Tarou=山田^太郎"),
            vec!["tarou", "yamada", "太郎", "山田"]
        );
    }

    #[test]
    fn query_words_keep_wildcards_and_drop_lone_stars() {
        assert_eq!(query_words("Nguyễn*"), vec!["nguyen*"]);
        assert_eq!(query_words("van  an"), vec!["van", "an"]);
        assert_eq!(query_words("*^Ng?yen"), vec!["ng?yen"]);
    }
}
