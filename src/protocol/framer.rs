//! Splitting a streamed response body into record lines, without copying them.

use bytes::BytesMut;

/// Splits a streamed response body into record lines without copying them.
///
/// Body chunks arrive at arbitrary boundaries. Each chunk is appended once to an internal
/// `BytesMut`; every complete line is then split off as its own `BytesMut`, which shares the
/// allocation, is mutable (the decoder parses it in place) and can be kept alive for as long
/// as decoded values borrow from it.
#[derive(Debug, Default)]
pub struct LineFramer {
    pending: BytesMut,
    /// How far `pending` has been searched for a newline already.
    scanned: usize,
    max_line: usize,
}

/// A record line longer than the framer accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("record line exceeds {limit} bytes")]
pub struct LineTooLong {
    /// The configured limit.
    pub limit: usize,
}

impl LineFramer {
    /// A framer that rejects lines longer than `max_line` bytes, so a malformed stream cannot
    /// make the client buffer without bound.
    pub fn new(max_line: usize) -> Self {
        Self { pending: BytesMut::new(), scanned: 0, max_line }
    }

    /// Appends a chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
    }

    /// The next complete line, without its `\n` or `\r\n` (blank lines too, so callers can
    /// count lines).
    pub fn next_line(&mut self) -> Result<Option<BytesMut>, LineTooLong> {
        let Some(newline) = memchr::memchr(b'\n', &self.pending[self.scanned..]) else {
            self.scanned = self.pending.len();
            if self.pending.len() > self.max_line {
                return Err(LineTooLong { limit: self.max_line });
            }
            return Ok(None);
        };
        let end = self.scanned + newline;
        self.scanned = 0;
        if end > self.max_line {
            return Err(LineTooLong { limit: self.max_line });
        }
        let mut line = self.pending.split_to(end + 1);
        line.truncate(end);
        if line.last() == Some(&b'\r') {
            line.truncate(end - 1);
        }
        Ok(Some(line))
    }

    /// At the end of the body: the last line if it had no trailing newline.
    pub fn finish(&mut self) -> Option<BytesMut> {
        self.scanned = 0;
        let line = self.pending.split();
        (!line.iter().all(u8::is_ascii_whitespace)).then_some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut framer = LineFramer::new(1 << 20);
        let mut lines = Vec::new();
        for chunk in chunks {
            framer.push(chunk);
            while let Some(line) = framer.next_line().unwrap() {
                if !line.iter().all(u8::is_ascii_whitespace) {
                    lines.push(line.to_vec());
                }
            }
        }
        lines.extend(framer.finish().map(|l| l.to_vec()));
        lines
    }

    #[test]
    fn lines_survive_any_chunking() {
        let body = b"{\"a\":1}\r\n\n{\"b\":2}\n  \n{\"c\":3}";
        let want = vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec(), b"{\"c\":3}".to_vec()];
        assert_eq!(frame(&[body]), want);
        for split in 0..body.len() {
            assert_eq!(frame(&[&body[..split], &body[split..]]), want, "split at {split}");
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(frame(&bytes), want);
    }

    #[test]
    fn overlong_lines_are_refused() {
        let mut framer = LineFramer::new(4);
        framer.push(b"12345");
        assert_eq!(framer.next_line(), Err(LineTooLong { limit: 4 }));
        let mut framer = LineFramer::new(4);
        framer.push(b"123\n12345\n");
        assert_eq!(framer.next_line().unwrap().as_deref(), Some(&b"123"[..]));
        assert!(framer.next_line().is_err());
    }
}
