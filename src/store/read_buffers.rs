//! Reusable buffers for reading large objects.
//!
//! tramy fixes the allocator's mmap threshold at 1 MiB (`staging::return_large_buffers_to_the_os`)
//! so memory goes back to the system after large receptions. Every buffer of that size is then a
//! fresh mapping, filled one page fault at a time and unmapped again: reading a 10 MB instance
//! for WADO-RS cost about a quarter of the throughput that way. Read buffers are therefore kept
//! in a small pool, bounded in total, and handed out again already mapped.

use std::sync::{Mutex, OnceLock};

use bytes::Bytes;

/// Buffers smaller than this come from the allocator as usual. Typical CR/DX/CT objects (a few
/// hundred kB) are pooled too: fresh, they cost a zeroing and page faults each (a third of the
/// CPU of forwarding them, measured with perf).
const POOLED_MIN: usize = 64 << 10;
/// The most memory the pool keeps while no read uses it.
const POOL_MAX_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Pool {
    free: Vec<Vec<u8>>,
    held: usize,
}

impl Pool {
    /// The smallest free buffer of at least `len` bytes that wastes no more than its own size.
    fn take(&mut self, len: usize) -> Option<Vec<u8>> {
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.len() >= len && b.len() <= len.saturating_mul(2))
            .min_by_key(|(_, b)| b.len())
            .map(|(i, _)| i)?;
        let buffer = self.free.swap_remove(best);
        self.held -= buffer.len();
        Some(buffer)
    }

    fn give_back(&mut self, buffer: Vec<u8>) {
        if buffer.len() >= POOLED_MIN && self.held + buffer.len() <= POOL_MAX_BYTES {
            self.held += buffer.len();
            self.free.push(buffer);
        }
    }
}

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// A buffer of `len` bytes, reused or zero-initialised. Its earlier contents are never exposed:
/// callers overwrite what they keep ([`freeze`] keeps only the bytes read).
pub fn take(len: usize) -> Vec<u8> {
    if len >= POOLED_MIN {
        if let Some(buffer) = pool().take(len) {
            return buffer;
        }
    }
    vec![0u8; len]
}

/// Gives a buffer back for reuse (dropped instead when small or when the pool is full).
pub fn give_back(buffer: Vec<u8>) {
    if buffer.len() >= POOLED_MIN {
        pool().give_back(buffer);
    }
}

/// The first `len` bytes of `buffer` as [`Bytes`]; the buffer returns to the pool when the last
/// clone is dropped.
pub fn freeze(buffer: Vec<u8>, len: usize) -> Bytes {
    Bytes::from_owner(Pooled { buffer, len })
}

struct Pooled {
    buffer: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_is_handed_out_again() {
        let mut pool = Pool::default();
        let b = vec![0u8; 3 << 20];
        let ptr = b.as_ptr();
        pool.give_back(b);
        assert!(pool.take(7 << 20).is_none(), "too small for 7 MiB");
        assert!(pool.take(1 << 20).is_none(), "too wasteful for 1 MiB");
        let again = pool.take(2 << 20).expect("fits 2 MiB");
        assert_eq!(again.as_ptr(), ptr, "reused, not reallocated");
        assert_eq!(pool.held, 0);
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_bound_and_nothing_small() {
        let mut pool = Pool::default();
        for _ in 0..100 {
            pool.give_back(vec![0u8; 2 << 20]);
        }
        pool.give_back(vec![0u8; 1000]);
        assert_eq!(pool.held, POOL_MAX_BYTES);
        assert!(pool.free.iter().all(|b| b.len() == 2 << 20));
    }

    #[test]
    fn frozen_bytes_show_only_what_was_read() {
        let mut b = take(2 << 20);
        b[..5].copy_from_slice(b"hello");
        assert_eq!(&freeze(b, 5)[..], b"hello");
    }
}
