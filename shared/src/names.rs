//! Rules for the human-readable text that callers write: display names, credential names, role
//! names and role descriptions. Names that lie are refused when they are written:
//!
//! - No character of the Unicode general categories Cc (controls: NUL, ESC, tab, newline, C1),
//!   Cf (format: bidi overrides and isolates such as U+202E, zero-width characters, soft hyphen,
//!   byte-order mark, tags), Zl (U+2028) or Zp (U+2029). These reorder, hide or break text in
//!   consoles, logs and terminals, so a name could show as something it is not or forge a line.
//! - A role name that looks like a built-in role's name, after case folding, NFKC and the UTS #39
//!   confusable skeleton (`IAM-Admin`, `iam‐admin` with U+2010, `iam-vіewer` with a Cyrillic і),
//!   is refused by [`crate::model::Role::new_org_role`] as if it were that name.
//!
//! Values already stored stay readable: nothing here runs when a record is deserialised.
//!
//! Error messages say which rule failed and name an offending character by its code point
//! (`U+202E`), never by the character itself, so an error cannot carry the trick it refuses.

use std::sync::LazyLock;

use caseless::Caseless;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::error::DomainError;

/// Trims and checks a human-readable name: 1 to `max` characters, not only white space, and no
/// character of the categories Cc, Cf, Zl or Zp (see the module documentation).
///
/// The length is counted before trimming, as the published schema's `maxLength` counts it. The
/// categories are checked on the value as sent, not only on what trimming leaves: a name sent
/// with a line separator or a newline at either end is refused, not silently mended.
pub fn validate_name(field: &str, raw: &str, max: usize) -> Result<String, DomainError> {
    let trimmed = raw.trim();
    let len = raw.chars().count();
    if trimmed.is_empty() || len > max {
        return Err(DomainError::invalid(format!("{field} must be 1-{max} characters and not only spaces, got {len}")));
    }
    refuse_hidden_characters(field, raw)?;
    Ok(trimmed.to_owned())
}

/// Trims and checks a free-text description: at most `max` characters (counted before trimming),
/// possibly empty, and the same category rule as names.
///
/// Ordinary spaces (Zs, the no-break space included) are allowed. Tab and newline are Cc, and
/// they are refused too: a description is one line of text shown in consoles, tables and logs,
/// where a newline could forge a log line or a row and a tab could misalign columns.
pub fn validate_description(field: &str, raw: &str, max: usize) -> Result<String, DomainError> {
    let len = raw.chars().count();
    if len > max {
        return Err(DomainError::invalid(format!("{field} must be at most {max} characters, got {len}")));
    }
    refuse_hidden_characters(field, raw)?;
    Ok(raw.trim().to_owned())
}

/// The built-in role that `name` resembles, if any: the built-in role's own name, or one that is
/// the same after full case folding, NFKC and the UTS #39 confusable skeleton.
pub fn imitates_builtin_role(name: &str) -> Option<&'static str> {
    static BUILTIN_KEYS: LazyLock<Vec<(String, &'static str)>> =
        LazyLock::new(|| crate::roles::builtins().iter().map(|r| (lookalike_key(&r.name), r.name.as_str())).collect());
    let key = lookalike_key(name);
    BUILTIN_KEYS.iter().find(|(builtin, _)| *builtin == key).map(|(_, name)| *name)
}

/// skeleton(NFKC(casefold(…))), with the fold and NFKC taken twice (after an NFD), as Unicode's
/// compatibility caseless matching (D146) does: NFKC can produce a capital that the first fold
/// never saw (U+2111 BLACK-LETTER CAPITAL I becomes `I`), and the second fold lowers it.
fn lookalike_key(name: &str) -> String {
    let folded: String = name.chars().nfd().default_case_fold().nfkc().default_case_fold().nfkc().collect();
    unicode_security::skeleton(&folded).collect()
}

fn refuse_hidden_characters(field: &str, text: &str) -> Result<(), DomainError> {
    match text.chars().find_map(|c| hidden_category(c).map(|category| (c, category))) {
        None => Ok(()),
        Some((c, category)) => Err(DomainError::invalid(format!(
            "{field} must not contain control, format, line separator or paragraph separator characters \
             (Unicode categories Cc, Cf, Zl, Zp); found U+{:04X}, {category}",
            u32::from(c)
        ))),
    }
}

fn hidden_category(c: char) -> Option<&'static str> {
    match c.general_category() {
        GeneralCategory::Control => Some("a control character (Cc)"),
        GeneralCategory::Format => Some("a format character (Cf)"),
        GeneralCategory::LineSeparator => Some("a line separator (Zl)"),
        GeneralCategory::ParagraphSeparator => Some("a paragraph separator (Zp)"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ids::{OrgId, Permission};
    use crate::model::{Actor, CREDENTIAL_NAME_MAX, DISPLAY_NAME_MAX, ROLE_DESCRIPTION_MAX, ROLE_NAME_MAX, Role, now};

    /// The characters of issue 10, item 8, with the code point each error must name.
    const HIDDEN: &[(char, &str)] = &[
        ('\u{202E}', "U+202E"),
        ('\u{200B}', "U+200B"),
        ('\u{2028}', "U+2028"),
        ('\u{2029}', "U+2029"),
        ('\u{0000}', "U+0000"),
        ('\u{001B}', "U+001B"),
    ];

    fn refused_as_invalid(result: Result<String, DomainError>, c: char, code: &str, what: &str) {
        match result {
            Err(DomainError::Invalid(msg)) => {
                assert!(msg.contains(code), "{what}: the error names {code}: {msg}");
                assert!(msg.contains("control"), "{what}: the error says which rule failed: {msg}");
                assert!(!msg.contains(c), "{what}: the error does not echo the character: {msg:?}");
            }
            other => panic!("{what}: expected 400 for {code}, got {other:?}"),
        }
    }

    fn role(name: &str, description: Option<&str>) -> Result<Role, DomainError> {
        Role::new_org_role(
            OrgId::parse("acme").unwrap(),
            name,
            description,
            vec![Permission::parse("ci:deploy").unwrap()],
            vec![crate::model::PrincipalType::ApiKey],
            Actor::system("t"),
            now(),
        )
    }

    #[test]
    fn bidi_overrides_zero_widths_separators_nul_and_escape_are_refused_in_every_name() {
        for &(c, code) in HIDDEN {
            for (field, max) in [("displayName", DISPLAY_NAME_MAX), ("name", CREDENTIAL_NAME_MAX), ("name", ROLE_NAME_MAX)] {
                for raw in [format!("pay{c}roll"), format!("{c}payroll"), format!("payroll{c}")] {
                    refused_as_invalid(validate_name(field, &raw, max), c, code, &format!("{field} {raw:?}"));
                }
            }
        }
    }

    #[test]
    fn bidi_overrides_zero_widths_separators_nul_and_escape_are_refused_in_descriptions() {
        for &(c, code) in HIDDEN {
            for raw in [format!("deploys{c} to prod"), format!("{c}deploys"), format!("deploys{c}")] {
                refused_as_invalid(validate_description("description", &raw, ROLE_DESCRIPTION_MAX), c, code, &format!("{raw:?}"));
            }
        }
    }

    #[test]
    fn tab_and_newline_are_refused_in_descriptions_and_names() {
        for (c, code) in [('\t', "U+0009"), ('\n', "U+000A"), ('\r', "U+000D"), ('\u{0085}', "U+0085")] {
            refused_as_invalid(validate_description("description", &format!("line one{c}line two"), 512), c, code, "description");
            refused_as_invalid(validate_name("displayName", &format!("billing{c}"), 128), c, code, "displayName");
        }
    }

    #[test]
    fn other_format_characters_are_refused_too() {
        // Isolates, a zero-width joiner, a soft hyphen, a byte-order mark and a tag character.
        for c in ['\u{2066}', '\u{200D}', '\u{00AD}', '\u{FEFF}', '\u{E0041}'] {
            let code = format!("U+{:04X}", u32::from(c));
            refused_as_invalid(validate_name("displayName", &format!("a{c}b"), 128), c, &code, "displayName");
        }
    }

    #[test]
    fn ordinary_names_are_accepted_and_stored_trimmed() {
        for name in ["billing-admin", "Zürich job", "Zu\u{0308}rich job", "日本語", "deploy 🚀", "ci_deployer.2", "Ünïcödé Ωmega"]
        {
            assert_eq!(validate_name("displayName", name, DISPLAY_NAME_MAX).unwrap(), name);
            assert_eq!(validate_name("name", &format!("  {name} "), ROLE_NAME_MAX).unwrap(), name);
        }
    }

    #[test]
    fn ordinary_descriptions_with_spaces_are_accepted_and_stored_trimmed() {
        for text in ["Deploys the billing service", "Zürich  team's job", "日本語 の 説明", "no\u{00A0}break", ""] {
            assert_eq!(validate_description("description", &format!(" {text} "), ROLE_DESCRIPTION_MAX).unwrap(), text);
        }
    }

    #[test]
    fn lengths_are_still_enforced() {
        assert!(validate_name("name", &"x".repeat(65), 64).is_err());
        assert!(validate_name("name", "   ", 64).is_err());
        let long = validate_description("description", &"d".repeat(513), 512).unwrap_err();
        assert!(long.to_string().contains("512"), "{long}");
    }

    #[test]
    fn names_that_imitate_a_builtin_role_are_recognised() {
        for (name, builtin) in [
            ("iam-admin", "iam-admin"),
            ("IAM-Admin", "iam-admin"),
            ("iam\u{2010}admin", "iam-admin"),
            ("iam-v\u{0456}ewer", "iam-viewer"),
            ("\u{FF49}\u{FF41}\u{FF4D}-admin", "iam-admin"),
            ("\u{FF29}\u{FF21}\u{FF2D}-ADMIN", "iam-admin"),
            ("\u{2111}am-admin", "iam-admin"),
            ("ORG\u{2013}OWNER", "org-owner"),
            ("Device-Provisioner", "device-provisioner"),
        ] {
            assert_eq!(imitates_builtin_role(name), Some(builtin), "{name:?}");
        }
    }

    #[test]
    fn names_unlike_any_builtin_role_are_not_imitations() {
        for name in ["billing-admin", "iam-admins", "iam-viewer-2", "admin", "iam admin", "Zürich job", "日本語", "org_owner"] {
            assert_eq!(imitates_builtin_role(name), None, "{name:?}");
        }
    }

    #[test]
    fn an_org_role_imitating_a_builtin_is_a_conflict_naming_the_builtin() {
        for (name, builtin) in
            [("iam-admin", "iam-admin"), ("IAM-Admin", "iam-admin"), ("iam\u{2010}admin", "iam-admin"), ("iam-v\u{0456}ewer", "iam-viewer")]
        {
            match role(name, None) {
                Err(DomainError::Conflict(msg)) => {
                    assert!(msg.contains(&format!("'{builtin}'")), "{name:?}: {msg}");
                    assert!(msg.is_ascii(), "{name:?}: the message does not echo the lookalike: {msg:?}");
                }
                other => panic!("{name:?}: expected 409, got {other:?}"),
            }
        }
        assert!(role("billing-admin", Some("Deploys billing")).is_ok());
    }

    #[test]
    fn an_org_role_with_a_hidden_character_in_its_description_is_refused() {
        for &(c, code) in HIDDEN {
            match role("deployer", Some(&format!("deploys{c}"))) {
                Err(DomainError::Invalid(msg)) => assert!(msg.contains(code) && !msg.contains(c), "{msg:?}"),
                other => panic!("{code}: expected 400, got {other:?}"),
            }
        }
        assert_eq!(role("deployer", Some("  Deploys billing ")).unwrap().description, "Deploys billing");
        assert_eq!(role("deployer", None).unwrap().description, "");
    }

    #[test]
    fn stored_names_that_break_the_rule_stay_readable() {
        let mut stored = serde_json::to_value(role("deployer", None).unwrap()).unwrap();
        stored["name"] = serde_json::json!("IAM\u{2010}Admin\u{202E}");
        stored["description"] = serde_json::json!("line\none\u{0000}");
        let read: Role = serde_json::from_value(stored).unwrap();
        assert_eq!(read.name, "IAM\u{2010}Admin\u{202E}");
        assert_eq!(read.description, "line\none\u{0000}");
    }

    fn is_hidden(c: char) -> bool {
        hidden_category(c).is_some()
    }

    proptest! {
        #[test]
        fn an_accepted_name_holds_no_hidden_character_and_an_error_echoes_none(raw in "\\PC{0,8}[\\p{Cc}\\p{Cf}\\p{Zl}\\p{Zp}]?\\PC{0,8}") {
            match validate_name("displayName", &raw, DISPLAY_NAME_MAX) {
                Ok(name) => prop_assert!(!name.chars().any(is_hidden)),
                Err(e) => prop_assert!(!e.to_string().chars().any(is_hidden)),
            }
            match validate_description("description", &raw, ROLE_DESCRIPTION_MAX) {
                Ok(text) => prop_assert!(!text.chars().any(is_hidden)),
                Err(e) => prop_assert!(!e.to_string().chars().any(is_hidden)),
            }
        }
    }
}
