"""What each precision costs an epoch on this machine, and whether bf16 trains as well as fp32 on a short run.
`python -m bench.precision --data PATH`."""
import json, statistics, tempfile, time, torch
from pathlib import Path
from fastcore.script import call_parse
from fastcifar.train import train
from bench.compute import compute_bound

@call_parse
def main(data:str='../shared/data/cifar10.tgz', # CIFAR-10 source
         epochs:int=2,              # epochs of each short run
         frac:float=0.1,            # fraction of the data of each short run
         seeds:str='42,1',          # seeds to run in each precision
         out:str='bench/results/precision_cpu.json'): # where to save the figures
    "Compute-bound epoch per precision, then short runs in fp32 and bf16 with the same seeds."
    bounds = {p: compute_bound('cpu', p, True, steps=10)['epoch_s'] for p in ('fp32', 'bf16')}
    runs = []
    for prec in ('fp32', 'bf16'):
        for s in map(int, seeds.split(',')):
            with tempfile.TemporaryDirectory() as d:
                t = time.perf_counter()
                train(data, Path(d)/'r', epochs=epochs, frac=frac, random_seed=s, precision=prec, show=False)
                r = json.loads((Path(d)/'r'/'results.json').read_text())
                runs.append(dict(precision=prec, seed=s, final_test_accuracy=r['final_test_accuracy'],
                                 seconds_per_epoch=r['seconds_per_epoch'], wall_s=time.perf_counter() - t))
    acc = {p: [r['final_test_accuracy'] for r in runs if r['precision'] == p] for p in ('fp32', 'bf16')}
    res = dict(date=time.strftime('%Y-%m-%d %H:%M'), threads=torch.get_num_threads(), compute_bound_epoch_s=bounds,
               short_runs=dict(epochs=epochs, frac=frac, runs=runs, mean_accuracy={p: statistics.mean(a) for p, a in acc.items()}))
    for p in bounds: print(f'{p}: {bounds[p]:.1f} s an epoch at the compute bound; short-run test accuracy {acc[p]}')
    if out: open(out, 'w').write(json.dumps(res, indent=2) + '\n')
