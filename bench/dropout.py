"""What dropout costs the CPU training step: torch's `nn.Dropout`, the int16-mask dropout fastcifar had until
2026-11-30, fastcifar's `Dropout` (geometric gaps: only the dropped positions drawn) and no dropout. All draw the same
law (each element dropped independently with probability p). `python -m bench.dropout`; `--compiled` adds the whole
Net under `torch.compile` (inductor's default mode), with fastcifar's Dropout and without dropout."""
import json, statistics, time, numpy as np, torch
from torch import nn
from fastcore.script import call_parse
from fastcifar.model import Net, Dropout
from bench.compute import step_times, cpu_name

class Int16MaskDropout(nn.Dropout):
    "The earlier candidate: an int16 uniform a element from numpy's PCG64, compared with round(p*65536), select, multiply."
    def forward(self, x):
        if not (self.training and 0 < self.p < 1 and x.device.type == 'cpu'): return super().forward(x)
        n, seed = x.numel(), int(torch.randint(2**62, (), dtype=torch.int64))
        bits = torch.from_numpy(np.random.PCG64(seed).random_raw((n + 3)//4).view(np.int16)[:n]).as_strided(x.shape, x.stride())
        keep = bits >= round(self.p*65536) - 32768
        return x * torch.where(keep, torch.tensor(1/(1-self.p), dtype=x.dtype), torch.tensor(0, dtype=x.dtype))

def _with(cls):
    "The Net with every Dropout replaced by `cls` of the same p."
    m = Net()
    for blk in m:
        for layer in blk:
            if isinstance(layer, nn.Sequential) and isinstance(layer[-1], nn.Dropout): layer[-1] = cls(layer[-1].p)
    return m

def _nets(compiled=False):
    nets = {'torch nn.Dropout(0.05)': _with(nn.Dropout), 'int16 mask (until 2026-11-30)': _with(Int16MaskDropout),
            'fastcifar Dropout(0.05)': Net(), 'no dropout (p=0)': Net(dropout=0.)}
    # fastcifar's Dropout draws its positions with numpy: a graph break at each of the 8, the rest compiled between
    if compiled: nets.update({'compiled: fastcifar Dropout(0.05)': torch.compile(Net()), 'compiled: no dropout': torch.compile(Net(dropout=0.))})
    return nets

@call_parse
def main(rounds:int=3,   # rounds, each timing every variant in turn (interleaved: shared-machine noise hits all alike)
         steps:int=10,   # timed steps per variant and round
         compiled:bool=False,  # also the whole Net under torch.compile, with and without dropout (compiling takes minutes)
         out:str='bench/results/dropout_cpu.json'):  # where to save the figures
    "Median bf16 channels-last training step (batch 128) of the Net with each dropout, on the CPU."
    nets, ts = _nets(compiled), {}
    assert sum(isinstance(m, Dropout) for m in nets['torch nn.Dropout(0.05)'].modules()) == 0
    for _ in range(rounds):
        for k, m in nets.items(): ts.setdefault(k, []).extend(step_times('cpu', 'bf16', True, steps=steps, warmup=2, model=m))
    base = statistics.median(ts['no dropout (p=0)'])
    res = {k: dict(median_s=statistics.median(v), min_s=min(v), max_s=max(v), n=len(v),
                   epoch_s=391*statistics.median(v), ratio_to_no_dropout=statistics.median(v)/base) for k, v in ts.items()}
    for k, r in res.items(): print(f"{k:32} step {r['median_s']*1e3:6.1f} ms (min {r['min_s']*1e3:.1f}, max {r['max_s']*1e3:.1f})  "
                                   f"391 steps {r['epoch_s']:6.1f} s  {r['ratio_to_no_dropout']:.2f}x no dropout")
    meta = dict(date=time.strftime('%Y-%m-%d %H:%M'), cpu=cpu_name(), torch=torch.__version__, threads=torch.get_num_threads(), compiled=compiled)
    print(f"{meta['date']}  {meta['cpu']}, {meta['threads']} threads, torch {meta['torch']}")
    if out: open(out, 'w').write(json.dumps(dict(meta=meta, results=res), indent=2) + '\n')
