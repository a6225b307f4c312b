//! Whole-value wildcard match on bytes: `*` is any run, `?` one byte.
//!
//! Only ASCII values reach it (the screen sends other values to Python), so a
//! byte is a character, as in the Python engine's RE2 glob.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Token {
    Byte(u8),
    One,
    Star,
}

/// Tokens of a pattern given as (part kind, literal) pairs: 0 literal, 1 `*`, 2 `?`.
pub fn tokens(parts: &[(u8, String)]) -> Vec<Token> {
    let mut out = Vec::new();
    for (kind, text) in parts {
        match kind {
            0 => out.extend(text.bytes().map(Token::Byte)),
            1 => {
                if out.last() != Some(&Token::Star) {
                    out.push(Token::Star)
                }
            }
            _ => out.push(Token::One),
        }
    }
    out
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
