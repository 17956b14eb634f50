"""The compute bound: forward + backward + SGD step of the Net on synthetic batches, per precision and memory format."""
import json, statistics, time, torch
from fastcore.script import call_parse
from fastcifar.model import Net
from fastcifar.machine import cpu_name
from fastcifar.memory import reuse_freed_memory

def _sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()

def step_times(device='cpu', precision='bf16', channels_last=True, bs=128, steps=20, warmup=5, model=None):
    "Seconds per training step (forward, backward, SGD step) of the Net (or `model`) on one synthetic batch."
    dev = torch.device(device)
    if dev.type == 'cpu': reuse_freed_memory()  # as a training run on the CPU does
    torch.manual_seed(0)
    mf = torch.channels_last if channels_last else torch.contiguous_format
    m = (model if model is not None else Net()).to(dev, memory_format=mf)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(bs, 3, 32, 32, device=dev).contiguous(memory_format=mf)
    y = torch.randint(0, 10, (bs,), device=dev)
    dt = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(enabled=precision == 'fp16' and dev.type == 'cuda')
    ts = []
    for i in range(warmup + steps):
        _sync(dev); t = time.perf_counter()
        with torch.autocast(dev.type, dtype=dt or torch.float32, enabled=dt is not None):
            loss = torch.nn.functional.cross_entropy(m(x).float(), y)
        scaler.scale(loss).backward(); scaler.step(opt); scaler.update(); opt.zero_grad(set_to_none=True)
        _sync(dev); ts.append(time.perf_counter() - t)
    return ts[warmup:]

def eval_times(device='cpu', precision='bf16', channels_last=True, bs=128, steps=20, warmup=3):
    "Seconds per inference batch (forward only, no grad)."
    dev = torch.device(device)
    mf = torch.channels_last if channels_last else torch.contiguous_format
    m = Net().to(dev, memory_format=mf).eval()
    x = torch.randn(bs, 3, 32, 32, device=dev).contiguous(memory_format=mf)
    dt = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(precision)
    ts = []
    with torch.no_grad():
        for i in range(warmup + steps):
            _sync(dev); t = time.perf_counter()
            with torch.autocast(dev.type, dtype=dt or torch.float32, enabled=dt is not None): m(x)
            _sync(dev); ts.append(time.perf_counter() - t)
    return ts[warmup:]

def summarise(ts):
    "Median, min, max and count of repeated measurements: every benchmark reports these."
    return dict(median=statistics.median(ts), min=min(ts), max=max(ts), n=len(ts))

def compute_bound(device='cpu', precision='bf16', channels_last=True, steps=20, train_steps=391, eval_batches=79):
    "Seconds an epoch (391 train steps + 79 test batches of 128) at the compute bound."
    tr, ev = summarise(step_times(device, precision, channels_last, steps=steps)), summarise(eval_times(device, precision, channels_last, steps=steps))
    return dict(device=device, precision=precision, channels_last=channels_last, step_s=tr, eval_batch_s=ev,
                epoch_s=tr['median']*train_steps + ev['median']*eval_batches)

@call_parse
def main(device:str='cpu',   # cpu or cuda
         steps:int=20,       # timed steps per configuration
         out:str=None):      # JSON file to write the figures to
    "Time the Net's training step per precision and memory format; print and save the figures."
    precs = ['fp32', 'bf16'] + (['fp16'] if device.startswith('cuda') else [])
    res = [compute_bound(device, p, cl, steps) for p in precs for cl in (False, True)]
    meta = dict(date=time.strftime('%Y-%m-%d %H:%M'), torch=torch.__version__, threads=torch.get_num_threads(),
                machine=torch.cuda.get_device_name() if device.startswith('cuda') else cpu_name())
    for r in res: print(f"{r['precision']:5} {'channels_last' if r['channels_last'] else 'contiguous':14} "
                        f"step {r['step_s']['median']*1e3:7.2f} ms (min {r['step_s']['min']*1e3:.2f}, max {r['step_s']['max']*1e3:.2f})  "
                        f"epoch at the bound {r['epoch_s']:7.2f} s")
    if out: open(out, 'w').write(json.dumps(dict(meta=meta, results=res), indent=2))
