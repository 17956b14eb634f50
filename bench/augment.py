"""The training data path's throughput per augmentation executor (albumentations per item, `BatchAug` per batch), on
the CPU, no model: synthetic decoded images -> augmentation -> normalised batches. `python -m bench.augment`."""
import json, time, torch
from fastcore.script import call_parse
from fastcifar.data import cifar_dls
from fastcifar.sources import Cifar
from fastcifar.synthetic import synthetic_arrays

from bench.compute import cpu_name, summarise

__all__ = ['images_per_s']

def images_per_s(dls):
    "Images a second over one full pass of `dls.train`."
    t = time.perf_counter()
    n = sum(len(b[0]) for b in dls.train)
    return n/(time.perf_counter() - t)

@call_parse
def main(n:int=10_000,       # synthetic training images
         bs:int=128,         # batch size
         rounds:int=3,       # full passes per executor (interleaved: shared-machine noise hits both alike)
         aug:str='readme',   # augmentation: readme or albu2
         workers:int=0,      # DataLoader worker processes (a GPU machine's many cores: each worker one OpenCV thread)
         out:str=None):      # JSON file to write the figures to
    "Images/s of the CPU training data path with each augmentation executor; print and save."
    x, y, xt, yt = synthetic_arrays(-(-n//10), 1)
    data = Cifar(x[:n], y[:n], xt, yt, source='synthetic')
    dls = {e: cifar_dls(data=data, bs=bs, seed=0, aug=aug, executor=e, device='cpu', workers=workers) for e in ('albumentations', 'batch')}
    ips = {e: [] for e in dls}
    for _ in range(rounds):
        for e, d in dls.items(): ips[e].append(images_per_s(d))
    meta = dict(date=time.strftime('%Y-%m-%d %H:%M'), cpu=cpu_name(), threads=torch.get_num_threads(), torch=torch.__version__,
                n=n, bs=bs, aug=aug, rounds=rounds, workers=workers)
    res = {e: summarise(v) for e, v in ips.items()}
    print(f"{meta['date']}  {meta['cpu']}  {meta['threads']} threads  torch {meta['torch']}  {n} images, bs {bs}, aug {aug}, {workers} workers")
    for e, r in res.items(): print(f"{e:15} {r['median']:9.0f} images/s (min {r['min']:.0f}, max {r['max']:.0f}, {r['n']} passes)")
    if out: open(out, 'w').write(json.dumps(dict(meta=meta, results=res), indent=2) + '\n')
