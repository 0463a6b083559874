//! Readers and writers that compute SHA-256 and count bytes on the way through.

use std::io::{self, Read, Write};

use aws_lc_rs::digest::{Context, SHA256};

/// `sha256:<hex>` of what went through.
fn finish(ctx: Context) -> String {
    format!("sha256:{}", hex::encode(ctx.finish().as_ref()))
}

/// A writer that hashes and counts everything written to `inner`.
pub struct HashWriter<W> {
    inner: W,
    ctx: Context,
    len: u64,
}

impl<W: Write> HashWriter<W> {
    /// Wrap `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            ctx: Context::new(&SHA256),
            len: 0,
        }
    }

    /// The inner writer, the digest (`sha256:<hex>`) and the length.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, finish(self.ctx), self.len)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let done = buf.get(..n).unwrap_or_default();
        self.ctx.update(done);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts everything read from `inner`.
pub struct HashReader<R> {
    inner: R,
    ctx: Context,
    len: u64,
}

impl<R: Read> HashReader<R> {
    /// Wrap `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            ctx: Context::new(&SHA256),
            len: 0,
        }
    }

    /// Read the rest of the input, then return the digest (`sha256:<hex>`) and the length.
    pub fn drain(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((finish(self.ctx), self.len))
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctx.update(buf.get(..n).unwrap_or_default());
        self.len += n as u64;
        Ok(n)
    }
}

/// `sha256:<hex>` of a byte string.
pub fn digest_of(data: &[u8]) -> String {
    let mut ctx = Context::new(&SHA256);
    ctx.update(data);
    finish(ctx)
}
