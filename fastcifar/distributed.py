"""Data-parallel training on several processes (GPUs, or CPU cores) with fastai's `distrib_ctx`: `accelerate launch`."""
import os, torch, torch.distributed as dist
from contextlib import contextmanager
from fastai.torch_core import rank_distrib, num_distrib, default_device

__all__ = ['world_size', 'setup', 'barrier', 'rank0_first', 'from_rank0', 'sum_ranks', 'all_ranks', 'gather', 'unwrap_dl',
           'data_parallel']

def world_size():
    "Processes training together: `WORLD_SIZE` as `accelerate launch`/torchrun set it, else 1."
    return max(num_distrib(), 1)

def _on(): return world_size() > 1 and dist.is_initialized()
def _comm_device(): return torch.device('cuda', torch.cuda.current_device()) if dist.get_backend() == 'nccl' else 'cpu'

def _broadcast(self, t, rank):
    "`DistributedDL._broadcast` on the device the backend takes."
    # fastai's puts the indices on `.cuda()` (for NCCL), which fails without a GPU; gloo takes CPU tensors
    t = torch.tensor(t, dtype=torch.long, device=_comm_device())
    dist.broadcast(t, rank)
    return t.cpu().tolist()

def setup():
    "Join the process group of this launch (gloo on the CPU, NCCL on GPUs); nothing in a single process."
    if world_size() == 1 or dist.is_initialized(): return
    try:
        from accelerate import PartialState
        from fastai.distributed import DistributedDL
    except ImportError: raise ImportError('training on several processes needs accelerate: pip install fastcifar[distributed]') from None
    # PartialState reads ACCELERATE_USE_CPU only through Accelerator: told nothing, it would join no group on a CPU-only machine
    cpu = not torch.cuda.is_available() or os.environ.get('ACCELERATE_USE_CPU', '').lower() in ('1', 'true', 'yes')
    if PartialState(cpu=cpu).device.type == 'cpu': default_device(False)  # fastai's default device: this process's
    DistributedDL._broadcast = _broadcast

def barrier():
    "Wait for every rank."
    if _on(): dist.barrier()

@contextmanager
def rank0_first():
    "Run the block on rank 0, then on the other ranks (rank 0 downloads, decodes and caches the data once)."
    if rank_distrib(): barrier()
    yield
    if not rank_distrib(): barrier()

def from_rank0(o):
    "Rank 0's `o` on every rank."
    if not _on(): return o
    l = [o]; dist.broadcast_object_list(l, 0); return l[0]

def sum_ranks(*xs):
    "The sums over ranks of the numbers `xs` (`xs` themselves in a single process)."
    if not _on(): return xs
    t = torch.tensor([float(x) for x in xs], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return tuple(t.tolist())

def all_ranks(o):
    "The `o` of every rank, in rank order (`[o]` in a single process)."
    if not _on(): return [o]
    res = [None]*world_size(); dist.all_gather_object(res, o); return res

def gather(learn, x):
    "`x` of the batch of every rank, in order, without `DistributedDL`'s padding (`x` itself when not sharded)."
    if not _on(): return x
    from fastai.distributed import DistributedDL
    return learn.dl.to_detach(x, cpu=False) if isinstance(learn.dl, DistributedDL) else x

def unwrap_dl(dl):
    "The DataLoader inside fastai's `DistributedDL` (which has no `rng` of its own)."
    if world_size() == 1: return dl
    from fastai.distributed import DistributedDL
    return dl.dl if isinstance(dl, DistributedDL) else dl

@contextmanager
def data_parallel(learn):
    "fastai's `learn.distrib_ctx` when launched on several processes, with per-process BatchNorm; nothing otherwise."
    if world_size() == 1: yield learn; return
    # No SyncBatchNorm: it runs on GPUs only, fastai leaves it in the trained model, and the seed normalised each batch
    # of `bs` on its own, as every process does here (DDP still gives every rank rank 0's running statistics)
    with learn.distrib_ctx(sync_bn=False): yield learn
