"""A real CPU epoch through fastcifar's Learner, split into data, step and fastai overhead, against the compute bound
measured in the same run; and the data pipeline alone. `python -m bench.epoch --data PATH`."""
import json, resource, time, torch
from fastcore.script import call_parse
from fastai.callback.core import Callback
from fastcifar.data import cifar_dls
from fastcifar.train import seed_learner, fit_seed_cycle, pick_precision
from bench.compute import compute_bound, cpu_name, summarise

class EpochTimer(Callback):
    "Seconds spent waiting for batches, inside batches (forward, backward, step, every callback), and in each phase."
    # A batch starts at the first callback's `before_batch` (this one, order -100) and ends after the last callback's
    # `after_batch` (`BatchEnd`, order 10,000): the time between is the DataLoader's alone (fetch, collate, batch
    # transforms). Pass both: `fit(..., cbs=timer.pair)`.
    order = -100
    def __init__(self): self.pair = [self, BatchEnd(self)]
    def before_train(self): self.t = self.t0 = time.perf_counter(); self.data = self.step = 0.
    def before_batch(self):
        now = time.perf_counter()
        if self.training: self.data += now - self.t
        self.tb = now
    def batch_end(self):
        now = time.perf_counter()
        if self.training: self.step += now - self.tb
        self.t = now
    def after_train(self): self.train_s = time.perf_counter() - self.t0
    def before_validate(self): self.v0 = time.perf_counter()
    def after_validate(self): self.valid_s = time.perf_counter() - self.v0

class BatchEnd(Callback):
    "The last `after_batch` of all: marks the end of the batch for its `EpochTimer`."
    order = 10_000
    def __init__(self, timer): self.timer = timer
    def after_batch(self): self.timer.batch_end()

def data_epoch(dls):
    "Seconds to draw every training batch once (decoded arrays -> augmentation -> normalised batch), no model."
    t = time.perf_counter()
    n = sum(len(b[0]) for b in dls.train)
    return n, time.perf_counter() - t


@call_parse
def main(data:str='../shared/data/cifar10.tgz', # CIFAR-10 source
         repeats:int=3,            # real epochs to time
         precision:str='auto',     # training precision
         out:str='bench/results/epoch_cpu.json'): # where to save the figures
    "Time the compute bound, the data pipeline alone and real epochs on this machine; print and save."
    prec = pick_precision(precision, 'cpu')
    bound = compute_bound('cpu', prec, True, steps=20)
    dls = cifar_dls(data, bs=128, seed=42)
    pipe = [data_epoch(dls) for _ in range(2)]
    epochs = []
    for r in range(repeats):
        learn = seed_learner(dls, precision=prec)
        tm = EpochTimer()
        with learn.no_bar(), learn.no_logging(): fit_seed_cycle(learn, 1, cbs=tm.pair)
        wall = tm.train_s + tm.valid_s
        epochs.append(dict(wall_s=wall, train_s=tm.train_s, test_s=tm.valid_s, data_wait_s=tm.data, in_batch_s=tm.step,
                           # in-batch time beyond the bare step: fastai's loop, callbacks, metrics
                           step_overhead_s=tm.step - bound['step_s']['median']*len(dls.train),
                           ratio_to_bound=wall/bound['epoch_s']))
    res = dict(date=time.strftime('%Y-%m-%d %H:%M'), machine=cpu_name(),
               threads=torch.get_num_threads(), torch=torch.__version__, precision=prec, compute_bound=bound,
               data_pipeline=dict(images_per_s=summarise([n/s for n, s in pipe]), epoch_s=summarise([s for _, s in pipe])),
               epoch=epochs, epoch_ratio=summarise([e['ratio_to_bound'] for e in epochs]),
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)
    print(f"compute bound ({prec}, channels-last): {bound['step_s']['median']*1e3:.0f} ms/step, "
          f"{bound['epoch_s']:.1f} s/epoch (391 train steps + 79 test batches)")
    print(f"data pipeline alone: {res['data_pipeline']['images_per_s']['median']:.0f} images/s "
          f"({res['data_pipeline']['epoch_s']['median']:.1f} s for the 50,000 training images)")
    for e in epochs:
        print(f"real epoch: {e['wall_s']:.1f} s = {e['ratio_to_bound']:.3f}x the bound (train {e['train_s']:.1f} s: "
              f"waiting for data {e['data_wait_s']:.1f} s, in batches {e['in_batch_s']:.1f} s, of which {e['step_overhead_s']:.1f} s beyond the bare step; test {e['test_s']:.1f} s)")
    print(f"median ratio {res['epoch_ratio']['median']:.3f} (min {res['epoch_ratio']['min']:.3f}, max {res['epoch_ratio']['max']:.3f})")
    if out: open(out, 'w').write(json.dumps(res, indent=2) + '\n')
