//! Keeping a long tree backup's resident memory near its live heap.
//!
//! glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed, so after
//! the first chunk or pack is freed, every large buffer comes from the heap. The growing
//! tables of a large tree (files cache, the writer's set of new blobs) then leave freed
//! blocks behind that stay resident: a backup of a million small files peaked at 427 MB for
//! 237 MB of live heap. A fixed threshold just above the largest chunk keeps chunk-sized
//! buffers recycled in the heap and puts only larger blocks in their own mappings (217 MB).
//! Below the largest chunk it made a disk image backup cost 50% more CPU (a page fault per
//! page of every new chunk), so the threshold follows the repository's chunk size.

/// Fixes malloc's mmap threshold just above `max_chunk` bytes (and a compressed or encrypted
/// chunk's overhead). Process-wide and for good: glibc has no way back to the sliding one.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn bound_heap_growth(max_chunk: usize) {
    let threshold = max_chunk + max_chunk / 64 + (256 << 10);
    let threshold = i32::try_from(threshold).unwrap_or(i32::MAX);
    // SAFETY: mallopt only changes a malloc parameter, under glibc's own locks; it has no
    // preconditions and touches no memory the program owns.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, threshold);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn bound_heap_growth(_max_chunk: usize) {}
