"CPU memory between training steps: freed tensor memory reused (no fresh pages a step), returned once an epoch."
import resource, subprocess, sys, pytest, torch
from fastcifar.memory import reuse_freed_memory, release_freed_memory

_FAULTS = '''
import contextlib, resource, sys, torch
from fastcifar.model import Net
from fastcifar.memory import reuse_freed_memory
if sys.argv[1] == 'on': assert reuse_freed_memory()
# the step in the precision training picks here (argv[2], from `pick_precision('auto', 'cpu')` in the test, so that
# this process imports no fastai): bf16 autocast where the CPU has bf16, else fp32 (bf16 emulated on an AVX2-only
# CPU takes some 250 MB a step in blocks above the mmap threshold, but `auto` never trains that way)
amp = torch.autocast('cpu', dtype=torch.bfloat16) if sys.argv[2] == 'bf16' else contextlib.nullcontext()
torch.set_num_threads(1); torch.manual_seed(0)
m = Net().to(memory_format=torch.channels_last)
opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last), torch.randint(0, 10, (128,))
def step():
    with amp: loss = torch.nn.functional.cross_entropy(m(x).float(), y)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
for _ in range(2): step()
faults = []
for _ in range(7):
    f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt; step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)
print(sorted(faults)[3])  # the median step: now and then a step still grows the heap (seen up to 4,000 faults)

'''

@pytest.mark.skipif(sys.platform != 'linux', reason='glibc malloc and page-fault counts: Linux only')
def test_cpu_steps_reuse_freed_memory():
    "After `reuse_freed_memory` a training step of 128 (in `--precision auto`'s choice) reuses the last step's memory: almost no fresh pages."
    from fastcifar.train import pick_precision
    precision = pick_precision('auto', 'cpu')
    faults = {k: int(subprocess.run([sys.executable, '-c', _FAULTS, k, precision], capture_output=True, text=True, check=True).stdout)
              for k in ('off', 'on')}
    # about 100 MB of activations a step: 10,000-35,000 fresh 4-KB pages a step with glibc's defaults (seen here and
    # in CI, fewer on a loaded machine); with freed memory kept the median step takes 8 MB at most, a fifth at most
    assert faults['off'] > 5000 and faults['on'] < min(2000, faults['off']/5), faults

_HOLES = '''
import sys
from fastcifar.memory import reuse_freed_memory, release_freed_memory
def rss(): return int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')))*1024
assert reuse_freed_memory()
import ctypes
libc = ctypes.CDLL('libc.so.6'); libc.malloc.restype = ctypes.c_void_p; libc.free.argtypes = [ctypes.c_void_p]
big, pins = [], []
for i in range(40):  # 8-MB blocks, each followed by a small block that stays: the heap cannot shrink from its top
    b = libc.malloc(8 << 20); ctypes.memset(b, 1, 8 << 20); big.append(b); pins.append(libc.malloc(64))
before = rss()
for b in big: libc.free(b)
kept = rss()
released = release_freed_memory()
print(before, kept, rss(), int(released))
'''

@pytest.mark.skipif(sys.platform != 'linux', reason='glibc malloc: Linux only')
def test_freed_memory_is_kept_between_steps_and_returned_on_release():
    "Freed blocks stay resident (ready for the next step) until `release_freed_memory` returns them, holes included."
    before, kept, after, released = map(int, subprocess.run([sys.executable, '-c', _HOLES], capture_output=True, text=True,
                                                            check=True).stdout.split())
    assert kept > before - (40 << 20)        # freed but kept: most of the 320 MB still resident
    assert released and after < kept - (200 << 20)  # returned: at least 200 MB of it gone from the resident set
