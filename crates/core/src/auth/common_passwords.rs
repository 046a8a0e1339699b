//! The passwords too common to accept: zxcvbn's list of the 30,000 most
//! common passwords (`data/common-passwords.txt`; its origin and MIT licence
//! are in `data/common-passwords.LICENSE`), embedded in the binary and
//! looked up case-insensitively.

use std::collections::HashSet;
use std::sync::LazyLock;

/// One password a line, lower case.
const LIST: &str = include_str!("../../../../data/common-passwords.txt");

/// Built on first use, once per process: a few milliseconds and about a
/// megabyte, borrowed from the embedded text.
static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| LIST.lines().filter(|l| !l.is_empty()).collect());

/// Whether `password` is on the list, whatever its case. The list holds
/// only lower case (a test checks), so lowering the candidate is enough.
pub fn is_common(password: &str) -> bool {
    COMMON.contains(password.to_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_long_lower_case_and_one_password_a_line() {
        assert!(COMMON.len() >= 10_000, "{} passwords", COMMON.len());
        for password in LIST.lines() {
            assert!(!password.is_empty() && password.trim() == password);
            assert_eq!(password, password.to_lowercase());
        }
    }

    #[test]
    fn common_passwords_are_found_whatever_their_case() {
        for password in ["password", "Password1", "ILOVEYOU", "qwertyuiop"] {
            assert!(is_common(password), "{password}");
        }
        for password in ["correct horse battery", "plum-kettle-9", ""] {
            assert!(!is_common(password), "{password}");
        }
    }
}
