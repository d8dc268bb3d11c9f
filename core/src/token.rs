//! The one rule for names and ids that travel in subjects and ids: 1 to `max` bytes of
//! `[A-Za-z0-9_-]` (one NATS subject token), optionally with a few more bytes a kind allows.

/// Whether `text` is 1..=`max` bytes of `[A-Za-z0-9_-]`, so always one NATS subject token.
pub fn is_word(text: &str, max: usize) -> bool {
    is_word_with(text, max, b"")
}

/// Whether `text` is 1..=`max` bytes of `[A-Za-z0-9_-]` and of the bytes in `extra`.
pub fn is_word_with(text: &str, max: usize, extra: &[u8]) -> bool {
    (1..=max).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || extra.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_is_one_to_max_bytes_of_letters_digits_underscore_and_dash() {
        for good in ["a", "A-z_09", "-", "_", &"x".repeat(8)] {
            assert!(is_word(good, 8), "{good:?}");
        }
        for bad in ["", &"x".repeat(9), "a.b", "a b", "a*", "a>", "é", "a\0", "a/b", "a:b"] {
            assert!(!is_word(bad, 8), "{bad:?}");
        }
        assert!(is_word_with("a:b.c", 8, b":."));
        assert!(!is_word_with("a:b.c", 8, b":"));
        assert!(!is_word_with("", 8, b":"));
    }
}
