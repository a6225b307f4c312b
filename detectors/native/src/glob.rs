//! Whole-value wildcard match on bytes: `*` is any run, `?` one byte.
//!
//! Only ASCII values reach it (the screen sends other values to Python), so a
//! byte is a character, as in the Python engine's RE2 glob.

use crate::abi::GlobPart;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Token {
    Byte(u8),
    One,
    Star,
}

/// Tokens of a pattern given as (`GlobPart` code, literal) pairs (runs of stars are one star).
pub fn tokens(parts: &[(i64, String)]) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    for (code, text) in parts {
        match GlobPart::from_code(*code)? {
            GlobPart::Literal => out.extend(text.bytes().map(Token::Byte)),
            GlobPart::Star => {
                if out.last() != Some(&Token::Star) {
                    out.push(Token::Star)
                }
            }
            GlobPart::One => out.push(Token::One),
        }
    }
    Ok(out)
}

/// Greedy match with one backtrack point (the last star): exact for `*` and `?` patterns.
pub fn matches(pattern: &[Token], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Token::Star) => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(Token::One) => {
                p += 1;
                t += 1;
                continue;
            }
            Some(Token::Byte(b)) if *b == text[t] => {
                p += 1;
                t += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|tok| *tok == Token::Star)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> Vec<Token> {
        let parts: Vec<(i64, String)> = text
            .chars()
            .map(|c| match c {
                '*' => (GlobPart::Star.code(), "*".to_owned()),
                '?' => (GlobPart::One.code(), "?".to_owned()),
                c => (GlobPart::Literal.code(), c.to_string()),
            })
            .collect();
        tokens(&parts).expect("known parts")
    }

    #[test]
    fn stars_collapse_and_unknown_parts_are_refused() {
        assert_eq!(
            pattern("a**b"),
            vec![Token::Byte(b'a'), Token::Star, Token::Byte(b'b')]
        );
        assert_eq!(pattern("?*"), vec![Token::One, Token::Star]);
        assert!(tokens(&[(3, "x".to_owned())]).is_err());
    }

    #[test]
    fn whole_value_matches() {
        for (glob, text, expected) in [
            ("*", "", true),
            ("*", "anything", true),
            ("", "", true),
            ("", "a", false),
            ("a*", "abc", true),
            ("a*", "ba", false),
            ("*c", "abc", true),
            ("*c", "abcd", false),
            ("a*c", "ac", true),
            ("a*c", "abcbc", true),
            ("a*c", "abcb", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "abbc", false),
            ("??", "ab", true),
            ("??", "a", false),
            ("*a*b*", "xxaxxbxx", true),
            ("*a*b*", "xxbxxaxx", false),
            ("*ab", "aab", true), // the star must take one "a" back
            ("*aab", "aaab", true),
            ("a*b?d", "axxbcd", true),
            ("a*b?d", "axbxxd", false),
            ("*?", "", false),
            ("*?", "x", true),
        ] {
            assert_eq!(
                matches(&pattern(glob), text.as_bytes()),
                expected,
                "{glob} on {text}"
            );
        }
    }

    #[test]
    fn agrees_with_a_reference_matcher_on_small_inputs() {
        fn reference(p: &[Token], t: &[u8]) -> bool {
            match p.split_first() {
                None => t.is_empty(),
                Some((Token::Star, rest)) => (0..=t.len()).any(|i| reference(rest, &t[i..])),
                Some((Token::One, rest)) => !t.is_empty() && reference(rest, &t[1..]),
                Some((Token::Byte(b), rest)) => t.first() == Some(b) && reference(rest, &t[1..]),
            }
        }
        let alphabet = ["a", "b", "*", "?"];
        let mut globs = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = globs
                .iter()
                .flat_map(|g| alphabet.iter().map(move |c| format!("{g}{c}")))
                .collect();
            globs.extend(longer);
        }
        globs.sort();
        globs.dedup();
        let mut texts = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = texts
                .iter()
                .flat_map(|t| ["a", "b"].iter().map(move |c| format!("{t}{c}")))
                .collect();
            texts.extend(longer);
        }
        texts.sort();
        texts.dedup();
        for glob in &globs {
            let tokens = pattern(glob);
            for text in &texts {
                assert_eq!(
                    matches(&tokens, text.as_bytes()),
                    reference(&tokens, text.as_bytes()),
                    "{glob} on {text}"
                );
            }
        }
    }
}
