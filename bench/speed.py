"""Every speed figure of the training path side by side, in one run, on the machine it runs on: `python -m bench.speed`.

The bf16 matmul peak; the faithful step (fastcifar's Dropout) and the step without dropout, each as a fraction of
that peak; the data path alone for both augmentation executors (images/s); the training loop's own overhead a batch
(a near-free model); and a real epoch for each executor split into data wait, step and loop overhead. `--compiled`
(the default) adds the faithful step and a real `--aug batch` epoch with the Net under torch.compile (`--compile`).
"""
import json, time, torch
from torch import nn
from fastcore.script import call_parse
from fastcifar.data import cifar_dls
from fastcifar.model import Net, layer_table
from fastcifar.train import seed_learner, fit_seed_cycle, pick_precision, _commit
from bench.compute import step_times, summarise, cpu_name
from bench.epoch import EpochTimer, data_epoch

__all__ = ['matmul_peak', 'step_flops', 'loop_overhead', 'real_epoch', 'main']

def matmul_peak(n=2048, reps=10, dtype=torch.bfloat16, device='cpu'):
    "GFLOP/s of an n x n matmul in `dtype`: the machine's practical peak for this precision."
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(2): a @ b
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
    return 2*n**3/summarise(ts)['median']/1e9

def step_flops(bs=128):
    "FLOPs of one training step of the Net: 2 a multiply-add, forward + backward (x3)."
    macs = sum(r['ni']*r['nf']*r['ks']**2//r['groups']*r['size']**2 for r in layer_table() if r['op'] == 'conv')
    return 3*2*macs*bs

def loop_overhead(dls, batches=100):
    "Microseconds a batch of fastai's training loop with fastcifar's callbacks around a near-free model."
    m = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10))
    learn = seed_learner(dls, m, precision='fp32', channels_last=False)
    tm = EpochTimer()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=tm.pair)
    return 1e6*tm.step/len(dls.train)

def real_epoch(dls, prec, compile=False):
    "One real epoch of the seed's Learner (its model compiled if `compile`): wall, data wait and in-batch seconds."
    learn = seed_learner(dls, precision=prec, compile=compile)
    first = None
    if compile:  # the first epoch compiles (full and partial batches, training and validation): timed apart
        t = time.perf_counter()
        with learn.no_bar(), learn.no_logging(): fit_seed_cycle(learn, 1)
        first = time.perf_counter() - t
    tm = EpochTimer()
    with learn.no_bar(), learn.no_logging(): fit_seed_cycle(learn, 1, cbs=tm.pair)
    res = dict(train_s=tm.train_s, test_s=tm.valid_s, data_wait_s=tm.data, in_batch_s=tm.step, steps=len(dls.train))
    return res if first is None else dict(res, first_epoch_s=first)

@call_parse
def main(data:str='../shared/data/cifar10.tgz', # CIFAR-10 source
         steps:int=20,             # timed training steps per configuration
         epochs:bool=True,         # time a real epoch per executor, about 2-3 minutes each on 2 cores (--no-epochs: skip)
         compiled:bool=True,       # also the faithful step and a batch-executor epoch under torch.compile (--no-compiled: skip)
         out:str=None):            # JSON file to write the figures to
    "Print (and save) the training path's speed figures on this machine, all measured in this one run."
    prec = pick_precision('auto', 'cpu')
    peak = matmul_peak()
    flops = step_flops()
    nets = {'faithful': Net(0.05), 'no dropout': Net(0.)}
    if compiled: nets['faithful, compiled'] = Net(0.05); nets['faithful, compiled'].compile()  # compiled in its warm-up steps
    steps_s = {name: summarise(step_times('cpu', prec, True, steps=steps, model=m))['median'] for name, m in nets.items()}
    dls = {e: cifar_dls(data, bs=128, seed=42, executor=e) for e in ('albumentations', 'batch')}
    # The data path alone, its second pass: the first also stacks each split that `StackedDL` reads in one index, once
    # a run (recorded apart, as data_first_pass_s)
    first = {e: data_epoch(d)[1] for e, d in dls.items()}
    pipe = {e: data_epoch(d) for e, d in dls.items()}
    res = dict(date=time.strftime('%Y-%m-%d %H:%M'), cpu=cpu_name(), threads=torch.get_num_threads(), torch=torch.__version__, commit=_commit(),
               precision=prec, matmul_peak_gflops=peak, step_gflop=flops/1e9,
               step_ms={k: 1e3*v for k, v in steps_s.items()}, step_fraction_of_peak={k: flops/v/1e9/peak for k, v in steps_s.items()},
               faithful_over_no_dropout=steps_s['faithful']/steps_s['no dropout'],
               data_images_per_s={e: n/s for e, (n, s) in pipe.items()}, data_first_pass_s=first, loop_overhead_us=loop_overhead(dls['batch']))
    if epochs:
        res['epoch'] = {e: real_epoch(d, prec) for e, d in dls.items()}
        if compiled: res['epoch']['batch, compiled'] = real_epoch(dls['batch'], prec, compile=True)
    print(f"{res['date']}  {res['cpu']}, {res['threads']} threads, torch {res['torch']}, {prec}")
    print(f"matmul peak ({prec}, 2048x2048): {peak:.0f} GFLOP/s; one training step of 128: {flops/1e9:.1f} GFLOP")
    for k, v in steps_s.items(): print(f"step, {k:18}: {1e3*v:6.1f} ms = {res['step_fraction_of_peak'][k]:.0%} of the peak")
    print(f"faithful / no dropout: {res['faithful_over_no_dropout']:.2f}x")
    for e, v in res['data_images_per_s'].items(): print(f"data path alone, {e:14}: {v:7.0f} images/s (its first pass {first[e]:.1f} s)")
    print(f"training loop overhead (near-free model): {res['loop_overhead_us']:.0f} us a batch")
    for e, r in res.get('epoch', {}).items():
        print(f"real epoch, {e:14}: train {r['train_s']:.1f} s (data wait {r['data_wait_s']:.1f} s = {r['data_wait_s']/r['train_s']:.1%}, "
              f"in batches {r['in_batch_s']:.1f} s, {r['steps']} steps), test {r['test_s']:.1f} s"
              + (f"; its first epoch, compiling, {r['first_epoch_s']:.1f} s all included" if 'first_epoch_s' in r else ''))
    if out: open(out, 'w').write(json.dumps(res, indent=2) + '\n')
