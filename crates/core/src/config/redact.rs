//! Passwords out of URLs, for every log line and error that names one.

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`: a URL
/// as it may appear in a log line or an error (a URL that does not parse is
/// hidden whole: it might still hold a password).
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

/// `text` (an error message, say) with the password of `url` masked, in
/// case the error quoted the URL it failed on.
pub fn redact_in(text: &str, url: &str) -> String {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
    {
        Some(password) if !password.is_empty() => text.replace(&password, "***"),
        _ => text.to_owned(),
    }
}
