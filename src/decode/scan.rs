//! A tiny string-aware scanner over raw record bytes, used only to find the envelope's
//! `schema` block before parsing.
//!
//! With `schemas.enable=true` every event repeats its table's Connect schema, typically three
//! quarters of the record. Knowing where that block starts lets the decoder recognise a block
//! it has seen before by comparing bytes, and skip building a tape for it.

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// `i` at an opening quote; returns the index after the closing quote.
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match *b.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// Returns the index just after the JSON value starting at `i` (which must not be whitespace).
/// Structure is matched, scalars are delimited; validity is left to the real parser.
pub(crate) fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match *b.get(j)? {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while !matches!(b.get(j), None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')) {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// Reads `"key"` ws `:` ws at `i`; returns the raw key bytes and the index of the value.
fn member(b: &[u8], i: usize) -> Option<(&[u8], usize)> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let end = skip_string(b, i)?;
    let key = &b[i + 1..end - 1];
    let colon = skip_ws(b, end);
    (b.get(colon) == Some(&b':')).then(|| (key, skip_ws(b, colon + 1)))
}

/// If `b` is a Connect envelope `{"schema":…,…}` (bare or as a record line's `value`), returns
/// where the schema value starts. `None` means "no fast path", never an error.
pub(crate) fn value_schema_start(b: &[u8]) -> Option<usize> {
    let open = skip_ws(b, 0);
    if b.get(open) != Some(&b'{') {
        return None;
    }
    let first = skip_ws(b, open + 1);
    let (key, at) = member(b, first)?;
    if key == b"schema" {
        return Some(at);
    }
    // A record line: walk its members to `value`, whose first member must be `schema`.
    let (mut key, mut at) = (key, at);
    loop {
        if key == b"value" {
            if b.get(at) != Some(&b'{') {
                return None;
            }
            let inner = skip_ws(b, at + 1);
            let (k, schema_at) = member(b, inner)?;
            return (k == b"schema").then_some(schema_at);
        }
        // Only a record line's own members precede `value`; anything else is a payload.
        if !matches!(key, b"topic" | b"partition" | b"offset" | b"key" | b"timestamp" | b"headers") {
            return None;
        }
        let next = skip_ws(b, skip_value(b, at)?);
        if b.get(next) != Some(&b',') {
            return None;
        }
        (key, at) = member(b, skip_ws(b, next + 1))?;
    }
}

/// True if the bytes at `i` continue the envelope with `,"payload":` (whitespace allowed).
pub(crate) fn payload_follows(b: &[u8], i: usize) -> bool {
    let comma = skip_ws(b, i);
    b.get(comma) == Some(&b',') && member(b, skip_ws(b, comma + 1)).is_some_and(|(k, _)| k == b"payload")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_value_schema() {
        let bare = br#" {"schema":{"a":"}{\"x"},"payload":{}}"#;
        let at = value_schema_start(bare).unwrap();
        let end = skip_value(bare, at).unwrap();
        assert_eq!(&bare[at..end], br#"{"a":"}{\"x"}"#);
        assert!(payload_follows(bare, end));

        let line = br#"{"topic":"t","partition":0,"offset":12,"key":{"schema":{"k":1},"payload":{"id":"\"value\":{"}},"value":{"schema":{"f":[1,2]},"payload":null}}"#;
        let at = value_schema_start(line).unwrap();
        let end = skip_value(line, at).unwrap();
        assert_eq!(&line[at..end], br#"{"f":[1,2]}"#);
        assert!(payload_follows(line, end));
    }

    #[test]
    fn declines_anything_else() {
        for doc in [
            &br#"{"payload":{},"schema":{}}"#[..],
            br#"{"op":"c"}"#,
            br#"[1]"#,
            b"null",
            br#"{"topic":"t","value":null}"#,
            br#"{"schema"#,
            b"",
        ] {
            if let Some(at) = value_schema_start(doc) {
                assert!(
                    !payload_follows(doc, skip_value(doc, at).unwrap_or(doc.len())),
                    "{}",
                    String::from_utf8_lossy(doc)
                );
            }
        }
        assert_eq!(skip_value(br#"{"a":"#, 0), None);
    }
}
