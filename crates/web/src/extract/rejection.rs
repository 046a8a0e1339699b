//! Turns what serde says about a malformed body or query string into an
//! answer a person can act on: the field it is about (a path such as
//! `items[0].quantity`) and plain words ("must be a whole number"), never
//! serde's internals ("invalid type: string, expected i64 at line 1 column 35").
//!
//! axum already deserializes through `serde_path_to_error`; the path and the
//! inner error are found by walking the rejection's error sources.

use std::error::Error as StdError;

use crate::error::{AppError, FieldError};

/// The JSON body's error, as the path to the value and serde_json's error.
pub(super) fn json_error(rejection: &(dyn StdError + 'static)) -> AppError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(rejection);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
            let inner = found.inner();
            return match inner.classify() {
                serde_json::error::Category::Data => {
                    shape_error(&found.path().to_string(), &inner.to_string())
                }
                _ => AppError::bad_request(
                    "malformed_json",
                    format!(
                        "the request body is not valid JSON (near line {}, column {})",
                        inner.line(),
                        inner.column()
                    ),
                ),
            };
        }
        source = e.source();
    }
    AppError::bad_request("malformed_json", "the request body is not valid JSON")
}

/// The query string's error: which parameter, in plain words (400).
pub(super) fn query_error(rejection: &(dyn StdError + 'static)) -> AppError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(rejection);
    while let Some(e) = source {
        if let Some(found) =
            e.downcast_ref::<serde_path_to_error::Error<serde_urlencoded::de::Error>>()
        {
            let (field, _, message) =
                describe(&found.path().to_string(), &found.inner().to_string());
            return AppError::bad_request(
                "bad_query",
                if field.is_empty() {
                    "the query string is malformed".to_owned()
                } else {
                    format!("the query parameter {message}")
                },
            );
        }
        source = e.source();
    }
    AppError::bad_request("bad_query", "the query string is malformed")
}

/// A body that is JSON but not the shape asked for: 422 naming the field.
fn shape_error(path: &str, inner: &str) -> AppError {
    // serde reads a struct from a list too (its fields in order): a body
    // that is a list is simply not the object asked for.
    let (field, code, message) = if path.starts_with('[') {
        (
            String::new(),
            "wrong_type",
            "the request body must be an object".to_owned(),
        )
    } else {
        describe(path, inner)
    };
    let mut error = AppError::invalid_all(vec![FieldError {
        field,
        code,
        message,
    }]);
    if let AppError::Invalid { code, .. } = &mut error {
        *code = "invalid_shape";
    }
    error
}

/// (field path, rule code, "<field> must …") for one serde message.
fn describe(path: &str, inner: &str) -> (String, &'static str, String) {
    // serde_path_to_error prints "." for the root.
    let path = if path == "." { "" } else { path };
    let join = |name: &str| {
        if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    if let Some(name) = quoted(inner, "missing field `") {
        let field = join(name);
        let message = format!("{field} is required");
        return (field, "required", message);
    }
    if let Some(name) = quoted(inner, "unknown field `") {
        // The path already ends at the unknown field.
        let field = if path.rsplit('.').next() == Some(name) {
            path.to_owned()
        } else {
            join(name)
        };
        let message = format!("{field} is not a field this request takes");
        return (field, "unknown_field", message);
    }
    let what = if path.is_empty() {
        "the request body"
    } else {
        path
    };
    let rule = if inner.contains("UUID") || inner.contains("uuid") {
        "must be an id such as 67e55044-10b1-426f-9247-bb680e5fe0c8"
    } else if [
        "expected i",
        "expected u",
        // validation::json_integer's words (it takes 2.0 as 2), and a string
        // where it wanted a number.
        "expected an integer",
        "expected a JSON number",
        "invalid digit",
        "number too",
        "cannot parse integer",
        "expected usize",
    ]
    .iter()
    .any(|s| inner.contains(s))
    {
        "must be a whole number"
    } else if inner.contains("expected a string") || inner.contains("expected string") {
        "must be text"
    } else if inner.contains("expected a sequence") {
        "must be a list"
    } else if inner.contains("expected a boolean") || inner.contains("expected bool") {
        "must be true or false"
    } else if inner.contains("expected struct") || inner.contains("expected a map") {
        "must be an object"
    } else if inner.contains("invalid type: null") {
        "must not be null"
    } else {
        "has the wrong form"
    };
    (path.to_owned(), "wrong_type", format!("{what} {rule}"))
}

/// The text between `prefix` and the next backtick.
fn quoted<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let start = text.find(prefix)? + prefix.len();
    let rest = &text[start..];
    Some(&rest[..rest.find('`')?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_in_plain_words() {
        assert_eq!(
            describe(
                "items[0].quantity",
                "invalid type: string \"x\", expected i64"
            ),
            (
                "items[0].quantity".into(),
                "wrong_type",
                "items[0].quantity must be a whole number".into()
            )
        );
        assert_eq!(
            describe("items[0]", "missing field `sku`"),
            (
                "items[0].sku".into(),
                "required",
                "items[0].sku is required".into()
            )
        );
        assert_eq!(
            describe(
                "colour",
                "unknown field `colour`, expected one of `id`, `items`"
            ),
            (
                "colour".into(),
                "unknown_field",
                "colour is not a field this request takes".into()
            )
        );
        assert_eq!(
            describe("limit", "invalid digit found in string").2,
            "limit must be a whole number"
        );
    }
}
