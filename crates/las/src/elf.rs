//! Is an executable statically linked? A minimal ELF reader: the file header and the program
//! headers, nothing else.
//!
//! Bounds policy (the input is an arbitrary file): every offset and size is checked against the
//! file's length with checked arithmetic before it is read; at most [`MAX_PHNUM`] program
//! headers of at most [`MAX_PHENTSIZE`] bytes each are read; anything that does not fit is an
//! error, never a panic. A file that is not a well-formed ELF executable is refused by the
//! caller, so an error here is always on the safe side.

use std::os::unix::fs::FileExt;

/// `PT_INTERP`: the program asks for a dynamic loader.
const PT_INTERP: u32 = 3;
/// Most program headers read.
pub const MAX_PHNUM: usize = 4096;
/// Largest program header entry accepted.
pub const MAX_PHENTSIZE: usize = 1024;

/// Why an executable is not a readable ELF.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ElfError(pub String);

fn bad(s: impl Into<String>) -> ElfError {
    ElfError(s.into())
}

/// Something that can be read at an offset (a file, or bytes in tests).
pub trait ReadAt {
    /// Fill `buf` from `offset`; short reads are errors.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ElfError>;
    /// The total length.
    fn size(&self) -> Result<u64, ElfError>;
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ElfError> {
        FileExt::read_exact_at(self, buf, offset).map_err(|e| bad(format!("reading: {e}")))
    }
    fn size(&self) -> Result<u64, ElfError> {
        self.metadata()
            .map(|m| m.len())
            .map_err(|e| bad(format!("stat: {e}")))
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ElfError> {
        let start = usize::try_from(offset).map_err(|_| bad("offset out of range"))?;
        let end = start
            .checked_add(buf.len())
            .ok_or_else(|| bad("offset out of range"))?;
        let src = self.get(start..end).ok_or_else(|| bad("truncated"))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn size(&self) -> Result<u64, ElfError> {
        u64::try_from(<[u8]>::len(self)).map_err(|_| bad("too large"))
    }
}

struct Endian(bool); // true: little endian

impl Endian {
    fn u16(&self, b: &[u8], at: usize) -> Result<u16, ElfError> {
        let s: [u8; 2] = b
            .get(at..at + 2)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad("truncated header"))?;
        Ok(if self.0 {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        })
    }
    fn u32(&self, b: &[u8], at: usize) -> Result<u32, ElfError> {
        let s: [u8; 4] = b
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad("truncated header"))?;
        Ok(if self.0 {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    }
    fn u64(&self, b: &[u8], at: usize) -> Result<u64, ElfError> {
        let s: [u8; 8] = b
            .get(at..at + 8)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad("truncated header"))?;
        Ok(if self.0 {
            u64::from_le_bytes(s)
        } else {
            u64::from_be_bytes(s)
        })
    }
}

/// Does the ELF executable in `f` have a `PT_INTERP` program header (is it dynamically
/// linked)? Errors for anything that is not a well-formed ELF file.
pub fn has_interp<R: ReadAt + ?Sized>(f: &R) -> Result<bool, ElfError> {
    let len = f.size()?;
    let mut hdr = [0u8; 64];
    if len < 52 {
        return Err(bad("not an ELF file (too short)"));
    }
    let hlen = if len >= 64 { 64 } else { 52 };
    f.read_exact_at(&mut hdr[..hlen], 0)?;
    if hdr[..4] != *b"\x7fELF" {
        return Err(bad("not an ELF file"));
    }
    let is64 = match hdr[4] {
        1 => false,
        2 => true,
        c => return Err(bad(format!("unknown ELF class {c}"))),
    };
    let e = match hdr[5] {
        1 => Endian(true),
        2 => Endian(false),
        d => return Err(bad(format!("unknown ELF data encoding {d}"))),
    };
    let (phoff, phentsize, phnum, min_ent) = if is64 {
        if hlen < 64 {
            return Err(bad("truncated ELF header"));
        }
        (
            e.u64(&hdr, 32)?,
            e.u16(&hdr, 54)?,
            e.u16(&hdr, 56)?,
            56usize,
        )
    } else {
        (
            u64::from(e.u32(&hdr, 28)?),
            e.u16(&hdr, 42)?,
            e.u16(&hdr, 44)?,
            32usize,
        )
    };
    let phentsize = usize::from(phentsize);
    let phnum = usize::from(phnum);
    if phnum == 0 {
        return Err(bad("no program headers"));
    }
    // 0xffff (PN_XNUM) would mean "the count is elsewhere": refused with the cap.
    if phnum > MAX_PHNUM {
        return Err(bad(format!("too many program headers ({phnum})")));
    }
    if phentsize < min_ent || phentsize > MAX_PHENTSIZE {
        return Err(bad(format!("bad program header size {phentsize}")));
    }
    let total = phentsize
        .checked_mul(phnum)
        .ok_or_else(|| bad("program headers out of range"))?;
    let end = phoff
        .checked_add(u64::try_from(total).map_err(|_| bad("program headers out of range"))?)
        .ok_or_else(|| bad("program headers out of range"))?;
    if end > len {
        return Err(bad("program headers beyond the end of the file"));
    }
    let mut table = vec![0u8; total];
    f.read_exact_at(&mut table, phoff)?;
    for i in 0..phnum {
        if e.u32(&table, i * phentsize)? == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal 64-bit little-endian ELF with the given program header types.
    fn elf64(types: &[u32]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for t in types {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            b.extend(ph);
        }
        b
    }

    #[test]
    fn finds_interp() {
        assert_eq!(has_interp(&elf64(&[6, 3, 1])[..]), Ok(true));
        assert_eq!(has_interp(&elf64(&[1, 1, 2])[..]), Ok(false));
    }

    #[test]
    fn refuses_malformed() {
        assert!(has_interp(&b"#!/bin/sh\n"[..]).is_err());
        assert!(has_interp(&[0u8; 100][..]).is_err());
        let mut b = elf64(&[1]);
        b[56..58].copy_from_slice(&5u16.to_le_bytes()); // more headers than bytes
        assert!(has_interp(&b[..]).is_err());
        let mut b = elf64(&[1]);
        b[32..40].copy_from_slice(&u64::MAX.to_le_bytes()); // offset overflows
        assert!(has_interp(&b[..]).is_err());
        let mut b = elf64(&[1]);
        b[54..56].copy_from_slice(&8u16.to_le_bytes()); // entry too small
        assert!(has_interp(&b[..]).is_err());
        assert!(has_interp(&elf64(&[])[..]).is_err());
    }

    #[test]
    fn reads_real_executables() {
        let me = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interp(&me).is_ok());
        if let Ok(sh) = std::fs::File::open("/bin/sh") {
            assert_eq!(has_interp(&sh), Ok(true), "/bin/sh is dynamic on Debian");
        }
    }

    proptest! {
        #[test]
        fn never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..600), class in 1u8..3, data in 1u8..3) {
            if bytes.len() >= 6 {
                bytes[..4].copy_from_slice(b"\x7fELF");
                bytes[4] = class;
                bytes[5] = data;
            }
            let _ = has_interp(&bytes[..]);
        }
    }
}
