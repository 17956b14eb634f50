"""The machine a run or a benchmark ran on: the CPU's model name and widest unit. The standard library only: the
benchmarks' fresh processes name the machine without importing fastai through the trainer."""
import platform

__all__ = ['cpu_name']

# The widest matrix or vector unit a CPU flag names, widest first: it sets a CPU's speed and `--precision auto`'s choice,
# and one model name may hide several ("AMD EPYC" here has been both AVX2 only and AVX-512 with bf16)
_ISA = (('amx_bf16', 'AMX bf16'), ('avx512_bf16', 'AVX-512 bf16'), ('avx512f', 'AVX-512'), ('avx2', 'AVX2'))

def cpu_name(cpuinfo='/proc/cpuinfo'):
    "The CPU's model name and widest unit, from `cpuinfo` where there is one (platform's answer is often empty on Linux)."
    try: lines = open(cpuinfo).read().splitlines()
    except OSError: lines = []
    field = lambda k: next((l.split(':', 1)[1].strip() for l in lines if l.split(':', 1)[0].strip() == k), None)
    name = field('model name') or platform.processor() or platform.machine()
    flags = set((field('flags') or '').split())
    isa = next((v for k, v in _ISA if k in flags), None)
    return f'{name} ({isa})' if isa else name
