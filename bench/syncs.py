"""Where the training loop reads tensors back to the host, per training batch: `python -m bench.syncs`.

On a GPU each such read makes the host wait for the device (a sync): torch's sync debug mode reports them, and they
are counted by where they are made. On the CPU nothing waits, so every call that would read a tensor back (`.cpu()`,
`.item()`, `bool(t)`, ...) is counted instead, by the same places: the same loop, the same inventory.
"""
import json, time, traceback, warnings, torch
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from fastcore.script import call_parse
from fastai.callback.core import Callback
from bench.compute import cpu_name

__all__ = ['HOST_READS', 'site', 'host_reads', 'main']

HOST_READS = ('cpu', 'item', 'tolist', 'numpy', '__bool__', '__float__', '__int__')  # Tensor methods that read to the host

def site(frames):
    "The place a read was made: 'file.py:function' of the innermost frame outside torch, tensor-subclass dispatch and this script."
    for f in reversed(frames):
        p = f.filename.replace('\\', '/')
        if '/torch/' in p or p.endswith(('/bench/syncs.py', '/warnings.py')) or f.name == '__torch_function__': continue
        return f"{p.rsplit('/', 1)[-1]}:{f.name}"
    return '?'

class _Window(Callback):
    "Opens the count at the start of each training batch (as the first callback) or closes it at its end (as the last)."
    def __init__(self, on, opens, switch=None):
        self.on, self.opens, self.switch, self.order = on, opens, switch or (lambda v: None), -10_000 if opens else 10_000
    def before_batch(self):
        if self.opens: self.on[0] = self.training; self.switch(self.on[0])
    def after_batch(self):
        if not self.opens: self.on[0] = False; self.switch(False)

@contextmanager
def _counting_cpu(on, seen):
    "Every host-read method of torch.Tensor counted while `on[0]`, by `site`."
    orig, inside = {n: getattr(torch.Tensor, n) for n in HOST_READS}, [False]
    def counted(name):
        def f(self, *a, **k):
            if not on[0] or inside[0]: return orig[name](self, *a, **k)
            seen.append((name, site(traceback.extract_stack()[:-1])))
            inside[0] = True  # one read, once: a tensor subclass's dispatch calls the method again inside
            try: return orig[name](self, *a, **k)
            finally: inside[0] = False
        return f
    try:
        for n in HOST_READS: setattr(torch.Tensor, n, counted(n))
        yield None
    finally:
        for n, f in orig.items(): setattr(torch.Tensor, n, f)

@contextmanager
def _counting_cuda(on, seen):
    "torch's CUDA sync debug mode ('warn'), on inside training batches only; each warning counted by where it was raised."
    with warnings.catch_warnings():  # restores `warnings.showwarning` too
        warnings.simplefilter('always')
        show = warnings.showwarning
        def record(message, category, *a, **k):
            if on[0] and 'synchroniz' in str(message): seen.append(('sync', site(traceback.extract_stack()[:-1])))
            else: show(message, category, *a, **k)
        warnings.showwarning = record
        try: yield lambda v: torch.cuda.set_sync_debug_mode('warn' if v else 0)
        finally: torch.cuda.set_sync_debug_mode(0)

def host_reads(learn, epochs=1):
    "Train `learn` for `epochs` of the one-cycle schedule; [(what, site)] of every host read made inside its training batches."
    from fastcifar.train import fit_seed_cycle
    on, seen = [False], []
    cuda = torch.device(learn.dls.device or 'cpu').type == 'cuda'
    with (_counting_cuda if cuda else _counting_cpu)(on, seen) as switch:
        with learn.no_bar(), learn.no_logging(): fit_seed_cycle(learn, epochs, cbs=[_Window(on, True, switch), _Window(on, False, switch)])
    return seen

@call_parse
def main(data:str=None,      # CIFAR-10 (default: $FASTCIFAR_DATA, else download)
         frac:float=0.1,     # fraction of the data: a few dozen batches are enough
         aug:str='batch',    # augmentation executor: batch or albumentations
         out:str=None):      # JSON file to write the counts to
    "Count the host reads in the training batches of one faithful epoch, by where they are made."
    from fastcifar.data import cifar_dls
    from fastcifar.train import seed_learner
    dls = cifar_dls(data, frac=frac, executor=aug, seed=0)
    learn = seed_learner(dls)
    seen = host_reads(learn)
    n = len(dls.train)
    cuda = torch.device(dls.device or 'cpu').type == 'cuda'
    dev = torch.cuda.get_device_name() if cuda else cpu_name()
    res = dict(date=time.strftime('%Y-%m-%d %H:%M'), device=dev, how='CUDA sync debug mode' if cuda else 'host-read calls (CPU)',
               batches=n, per_site={f'{w} at {s}': c for (w, s), c in Counter(seen).most_common()})
    print(f"{res['date']}  {dev}: {res['how']}, {n} training batches ({aug} executor)")
    for k, c in res['per_site'].items(): print(f'{c/n:8.2f} a batch  {k}')
    if not seen: print('none')
    if out: Path(out).write_text(json.dumps(res, indent=1))
