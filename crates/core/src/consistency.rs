//! Consistency tokens: "everything this user wrote up to here".
//!
//! A token carries the user's write position (`users.write_seq`). One user's
//! writes are serialised by their user row lock, so positions commit in order
//! even while other users' transactions commit out of order: "every order of
//! mine with position ≤ N" is a sound question whatever commits around it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConsistencyToken {
    pub write_seq: i64,
}

/// A token this server did not issue.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
#[error("malformed consistency token")]
pub struct MalformedToken;

const VERSION_PREFIX: &str = "st1:";

impl ConsistencyToken {
    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{VERSION_PREFIX}{}", self.write_seq))
    }

    pub fn decode(raw: &str) -> Result<Self, MalformedToken> {
        let bad = || MalformedToken;
        let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).map_err(|_| bad())?;
        let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
        let write_seq = text
            .strip_prefix(VERSION_PREFIX)
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(bad)?;
        Ok(Self { write_seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let token = ConsistencyToken { write_seq: 42 };
        assert_eq!(ConsistencyToken::decode(&token.encode()).unwrap(), token);
        assert!(ConsistencyToken::decode("42").is_err());
        assert!(ConsistencyToken::decode("").is_err());
        assert!(ConsistencyToken::decode(&URL_SAFE_NO_PAD.encode("st1:-3")).is_err());
    }
}
