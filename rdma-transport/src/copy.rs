//! Copies between memory that other threads, processes or NICs may touch at
//! the same time.
//!
//! Registered memory is shared with peers that write into it whenever they
//! like, so a plain `copy_nonoverlapping` would be a data race (undefined
//! behaviour in Rust's model). These copies go word by word through atomics
//! instead: each aligned 8-byte word is copied atomically, nothing larger is.
//! That is exactly RDMA's guarantee (a READ longer than 8 bytes that races a
//! WRITE may return a torn copy) and no more, so code above the fabric cannot
//! come to rely on an atomicity the hardware does not give.
//!
//! Words are copied in increasing address order, stores with `Release` and
//! loads with `Acquire`: a reader that sees the last word of a record sees the
//! words before it. FaRM's ring polling relies on the same ordering from the
//! NIC; on x86 these are plain moves.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Copies `len` bytes from `source` to `target`.
///
/// # Safety
/// Both ranges must be valid for `len` bytes for the whole call and must not
/// overlap. Concurrent access by others is allowed only through atomics or
/// through these functions.
pub unsafe fn copy_shared(source: *const u8, target: *mut u8, len: usize) {
    let mut done = 0;
    // Byte-wise until the source is word-aligned.
    while done < len && !(source as usize + done).is_multiple_of(8) {
        // SAFETY: (1) both ranges are valid for `len` bytes (caller); (2) an
        // AtomicU8 has the alignment and size of a u8.
        unsafe { copy_byte(source.add(done), target.add(done)) };
        done += 1;
    }
    let same_phase = (source as usize + done) % 8 == (target as usize + done) % 8;
    while len - done >= 8 {
        // SAFETY: (1) source + done is 8-aligned (loop above) and within the
        // range (caller); (2) AtomicU64 has the layout of u64.
        let word = unsafe { (*(source.add(done) as *const AtomicU64)).load(Ordering::Acquire) };
        if same_phase {
            // SAFETY: the target has the source's phase, so it is 8-aligned
            // here too, and it lies within the target range (caller).
            unsafe { (*(target.add(done) as *const AtomicU64)).store(word, Ordering::Release) };
        } else {
            for (i, byte) in word.to_ne_bytes().into_iter().enumerate() {
                // SAFETY: within the target range (caller); byte alignment.
                unsafe {
                    (*(target.add(done + i) as *const AtomicU8)).store(byte, Ordering::Release)
                };
            }
        }
        done += 8;
    }
    while done < len {
        // SAFETY: as in the first loop.
        unsafe { copy_byte(source.add(done), target.add(done)) };
        done += 1;
    }
}

/// # Safety
/// Both pointers valid for one byte.
unsafe fn copy_byte(source: *const u8, target: *mut u8) {
    // SAFETY: the caller guarantees both bytes are valid; AtomicU8 has u8's layout.
    unsafe {
        let byte = (*(source as *const AtomicU8)).load(Ordering::Acquire);
        (*(target as *const AtomicU8)).store(byte, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_alignment_and_length() {
        let source: Vec<u8> = (0..200u8).collect();
        for source_offset in 0..9 {
            for target_offset in 0..9 {
                for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 100] {
                    let mut target = vec![0xEEu8; 200];
                    // SAFETY: both ranges are within their vectors, which do not overlap.
                    unsafe {
                        copy_shared(
                            source.as_ptr().add(source_offset),
                            target.as_mut_ptr().add(target_offset),
                            len,
                        )
                    };
                    assert_eq!(
                        &target[target_offset..target_offset + len],
                        &source[source_offset..source_offset + len]
                    );
                    assert!(target[..target_offset].iter().all(|b| *b == 0xEE));
                    assert!(target[target_offset + len..].iter().all(|b| *b == 0xEE));
                }
            }
        }
    }
}
