//! Amounts as people read them. Every amount in Sightline is an integer
//! number of the currency's minor unit (cents); this is the one place that
//! turns it into text, so the form's rules, the pages and the error messages
//! all print "$1,234.50" the same way. (The browser re-prints amounts in its
//! own locale; this is the server's rendering for pages without JavaScript.)

/// `1234` → `"12.34"`: the plain decimal form, as typed into a form.
pub fn decimal(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// `123450, "USD"` → `"$1,234.50"`; currencies without a symbol here are
/// written after the amount: `"1,234.50 CHF"`.
pub fn format_amount(cents: i64, currency: &str) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let whole = group_thousands(abs / 100);
    let number = format!("{whole}.{:02}", abs % 100);
    match symbol(currency) {
        Some(symbol) => format!("{sign}{symbol}{number}"),
        None => format!("{sign}{number} {currency}"),
    }
}

fn symbol(currency: &str) -> Option<&'static str> {
    Some(match currency {
        "USD" => "$",
        "EUR" => "€",
        "GBP" => "£",
        "JPY" => "¥",
        "INR" => "₹",
        _ => return None,
    })
}

/// `1000000` → `"1,000,000"`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What a person types as a price ("12", "12.5", "$1,234.50") → cents.
/// `None` when it is not an amount with at most two decimals.
pub fn parse_amount(text: &str) -> Option<i64> {
    let cleaned: String = text
        .trim()
        .trim_start_matches(['$', '€', '£', '¥', '₹'])
        .chars()
        .filter(|c| *c != ',' && !c.is_whitespace())
        .collect();
    let (whole, fraction) = match cleaned.split_once('.') {
        Some((w, f)) => (w, f),
        None => (cleaned.as_str(), ""),
    };
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > 2
        || whole.len() > 12
    {
        return None;
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let fraction: i64 = format!("{fraction:0<2}").parse().ok()?;
    Some(whole * 100 + fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_amounts() {
        assert_eq!(decimal(0), "0.00");
        assert_eq!(decimal(5), "0.05");
        assert_eq!(decimal(-150), "-1.50");
        assert_eq!(format_amount(10_000_000, "USD"), "$100,000.00");
        assert_eq!(format_amount(123_450, "EUR"), "€1,234.50");
        assert_eq!(format_amount(99, "CHF"), "0.99 CHF");
        assert_eq!(format_amount(-100_000, "USD"), "-$1,000.00");
    }

    #[test]
    fn reads_typed_prices() {
        assert_eq!(parse_amount("12"), Some(1200));
        assert_eq!(parse_amount("12.5"), Some(1250));
        assert_eq!(parse_amount(" $1,234.05 "), Some(123_405));
        assert_eq!(parse_amount(".5"), Some(50));
        assert_eq!(parse_amount("0"), Some(0));
        for bad in ["", "abc", "1.234", "-1", "1e3", "12.3.4", "."] {
            assert_eq!(parse_amount(bad), None, "{bad:?}");
        }
    }
}
