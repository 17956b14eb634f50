"""The CPU's memory between training steps: glibc's malloc keeps freed tensor memory for the next step, and gives
it back to the system once an epoch.

A CPU training step of 128 allocates and frees about 100 MB of activations and gradients. By default glibc serves
large blocks with mmap and trims its heap's free top back to the system, so every step page-faulted and zero-filled
that memory afresh (about 25,000 page faults a step here, a fifth of the step). torch has no caching allocator for
the CPU and fastai none at all: glibc's own switches (mallopt, malloc_trim) are the fix. Kept memory fragments as the
run goes on (small long-lived allocations between the large blocks: 2.5 GB free of 2.8 GB after ten epochs, seen on
a live run), so it is returned once an epoch (`release_freed_memory`, called by `callbacks.ReleaseFreedMemory`).
On other C libraries nothing is changed.
"""
import ctypes, platform

__all__ = ['reuse_freed_memory', 'release_freed_memory']

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt option numbers (malloc.h)

def _libc():
    "glibc, or None on other systems and C libraries."
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc': return None
    try: return ctypes.CDLL('libc.so.6')
    except OSError: return None

def reuse_freed_memory(mmap_threshold=32 << 20, trim_threshold=1 << 30):
    "Keep the memory of freed CPU tensors in the process for the next step; True if set (glibc), else False."
    # blocks up to 32 MB (the largest activation of this Net is 26 MB in fp32) come from the heap, and up to 1 GiB of
    # free heap top is kept; both set once, for the whole process
    libc = _libc()
    if libc is None: return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))

def release_freed_memory():
    "Give the free pages of the process's heap back to the system (glibc's malloc_trim); True if any were."
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
