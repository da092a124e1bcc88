//! Argon2id's working memory (64 MiB for every key proxborg makes), mapped for the hash.
//!
//! The argon2 crate allocates its blocks with `alloc_zeroed` at 64-byte alignment, which the
//! system allocator serves as an aligned allocation plus a `memset`: one thread faults in and
//! zeroes all 16384 pages before the lanes start. That took 77 ms of a 0.19 s unlock on the
//! two-core benchmark machine, a fifth of an unchanged backup. A fresh anonymous mapping is
//! already zero (the kernel guarantees it), so nothing needs writing up front; its pages are
//! faulted in by the lanes themselves, in parallel, and with `MADV_HUGEPAGE` (the default
//! THP mode of Debian and PVE kernels is `madvise`) 2 MiB at a time instead of 4 KiB.

use argon2::Block;

/// `count` zeroed Argon2 blocks in their own mapping, unmapped on drop.
pub struct KdfMemory {
    ptr: std::ptr::NonNull<Block>,
    count: usize,
}

impl KdfMemory {
    /// None when `count` is 0 or the mapping fails (the caller falls back to the crate's own
    /// allocation, so an odd system costs speed, never an unlock).
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    pub fn map(count: usize) -> Option<Self> {
        let len = count.checked_mul(Block::SIZE).filter(|&l| l > 0)?;
        // SAFETY: an anonymous private mapping of `len` bytes at an address the kernel picks;
        // no existing memory is touched. The result is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: advice on the mapping made just above; failure (no THP) changes nothing.
        unsafe {
            libc::madvise(p, len, libc::MADV_HUGEPAGE);
        }
        Some(KdfMemory {
            ptr: std::ptr::NonNull::new(p.cast())?,
            count,
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn map(_count: usize) -> Option<Self> {
        None
    }

    #[allow(unsafe_code)]
    pub fn blocks(&mut self) -> &mut [Block] {
        // SAFETY: the mapping holds `count` blocks, is page-aligned (Block needs 64 bytes),
        // zero-filled by the kernel (all-zero words are a valid Block) and borrowed mutably
        // through `self` only.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.count) }
    }
}

impl Drop for KdfMemory {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // The pages held passphrase-derived state: munmap hands them back to the kernel, which
        // zeroes a page before any process sees it again.
        #[cfg(target_os = "linux")]
        // SAFETY: unmaps exactly the mapping `map` made; no reference to it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.count * Block::SIZE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mapping_is_zeroed_writable_and_sized() {
        let mut m = KdfMemory::map(4096).expect("mmap of 4 MiB");
        let b = m.blocks();
        assert_eq!(b.len(), 4096);
        assert!(b.iter().all(|blk| blk.as_ref().iter().all(|&w| w == 0)));
        b[4095] = Block::new();
        assert_eq!(b.as_ptr() as usize % 64, 0);
        assert!(KdfMemory::map(0).is_none());
    }
}
