"""fastai callbacks of a training run: CPU bf16 autocast, history, checkpoints, plots, results."""
import json, random, time, numpy as np, torch
import torch.nn.functional as F
from fastcore.foundation import L
from contextlib import nullcontext
from fastai.callback.core import Callback
from fastai.interpret import ClassificationInterpretation
from fastai.learner import SkipToEpoch
from fastai.torch_core import rank_distrib
from fastai.learner import Recorder, AvgSmoothLoss
from .files import atomic_write
from .memory import release_freed_memory
from .model import bare_model
from .distributed import all_ranks, gather, sum_ranks, unwrap_dl

__all__ = ['NonFiniteLoss', 'DeviceSmoothLoss', 'SmoothLossOnDevice', 'CPUAutocast', 'ReleaseFreedMemory', 'WeightEMA', 'LoaderEpoch', 'History', 'Checkpoint', 'RunArtefacts', 'shift_image',
           'rng_state', 'set_rng_state', 'plot_curves', 'HISTORY_COLS']

HISTORY_COLS = ('epoch', 'train_loss', 'train_accuracy', 'test_loss', 'test_accuracy', 'seconds')

class NonFiniteLoss(RuntimeError):
    "The run diverged: a loss or the final weights became NaN or infinite."

class DeviceSmoothLoss(AvgSmoothLoss):
    "fastai's smoothed training loss (the Recorder's and the progress bar's), kept on the loss's device."
    # fastai's own copies every batch's loss to the host (`to_detach`), which on a GPU waits for the step to finish:
    # one host sync a batch. The same exponential average, on the device, lets the loop queue the next batch; the
    # Recorder reads it to the host once an epoch.
    def accumulate(self, learn):
        loss = learn.loss.detach().mean().float()
        self.count += 1
        self.val = torch.lerp(loss, self.val.to(loss.device), self.beta)

class SmoothLossOnDevice(Callback):
    "The Recorder's smoothed training loss as `DeviceSmoothLoss`; its per-batch record copied to the host once an epoch."
    order = Recorder.order - 1  # before the Recorder resets the smooth loss in `before_fit`
    def before_fit(self):
        sl = self.recorder.smooth_loss
        if not isinstance(sl, DeviceSmoothLoss): self.recorder.smooth_loss = DeviceSmoothLoss(sl.beta)
    def after_epoch(self):  # host values for `recorder.plot_loss` and the like (matplotlib cannot read CUDA tensors)
        self.recorder.losses = [l.cpu() if isinstance(l, torch.Tensor) else l for l in self.recorder.losses]
    after_fit = after_epoch  # also after a cancelled fit (`lr_find`)

class CPUAutocast(Callback):
    "bf16 autocast on the CPU (fastai's `MixedPrecision` is CUDA-only); no grad scaler is needed for bf16."
    order, run_valid = 10, True
    def before_batch(self):
        self.ctx = torch.autocast('cpu', dtype=torch.bfloat16); self.ctx.__enter__()
    def after_pred(self): self.learn.pred = self.pred.float()
    def after_loss(self): self.ctx.__exit__(None, None, None); self.ctx = nullcontext()
    def after_cancel_batch(self): self.ctx.__exit__(None, None, None)

class ReleaseFreedMemory(Callback):
    "After every epoch, give the heap's free pages back to the system (CPU runs keep freed memory between steps)."
    order = 90
    def after_epoch(self): release_freed_memory()

class WeightEMA(Callback):
    "An exponential moving average of the weights (BatchNorm statistics included), updated after every optimizer step; validation and the model left after `fit` use it."
    # torch's AveragedModel and EMA update (torch.optim.swa_utils) do the averaging; fastai has no EMA callback, so
    # this one only times it and swaps the averaged weights in for validation (and for good at the end of `fit`)
    order = 75  # after_fit: the averaged weights are in place before RunArtefacts (80) checks and measures them
    def __init__(self, decay=0.999): self.decay, self.avg, self._pending = decay, None, None
    def before_fit(self):
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        if self.avg is None:
            self.avg = AveragedModel(bare_model(self.model), multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)
        if self._pending is not None: self.load_state(self._pending)
    def after_step(self): self.avg.update_parameters(bare_model(self.model))
    def _averaged(self):
        "The averaged weights as a state dict of the model (the raw weights until the first step)."
        if not int(self.avg.n_averaged): return {k: v.clone() for k, v in bare_model(self.model).state_dict().items()}
        return {k: v.clone() for k, v in self.avg.module.state_dict().items()}
    def before_validate(self):
        self._raw = {k: v.clone() for k, v in bare_model(self.model).state_dict().items()}
        bare_model(self.model).load_state_dict(self._averaged())
    def after_validate(self): bare_model(self.model).load_state_dict(self._raw)
    def after_fit(self): bare_model(self.model).load_state_dict(self._averaged())
    def state(self):
        "What a checkpoint keeps of the average: its weights and how many steps it holds."
        return dict(weights=self.avg.module.state_dict(), n=int(self.avg.n_averaged))
    def load_state(self, st):
        if self.avg is None: self._pending = st; return  # before the first `fit`: kept until the model is known
        self.avg.module.load_state_dict(st['weights']); self.avg.n_averaged.fill_(st['n']); self._pending = None

class LoaderEpoch(Callback):
    "Tells the training DataLoader the epoch it serves (`StackedDL.epoch`: alternating flips depend on it), resumes included."
    def before_epoch(self): unwrap_dl(self.dls.train).epoch = self.epoch

class EpochCallback(Callback):
    "Calls `epoch_done` after epochs that trained only."
    # Not for the epochs a resumed `fit` skips (fastai's `SkipToEpoch` cancels them but still calls `after_epoch`,
    # fastai issue #3780), nor for the `get_preds`/`validate` that an `after_fit` runs.
    def before_train(self): self._trained = True
    def after_epoch(self):
        if getattr(self, '_trained', False): self._trained = False; self.epoch_done()
    def epoch_done(self): pass

class History(EpochCallback):
    "One row an epoch (the seed's table): mean train loss, train accuracy, test loss and accuracy, seconds."
    # counts its own train loss and accuracy (the Recorder's test loss and accuracy), as the seed's table has them
    order, run_after, check_every = 65, Recorder, 25  # look for NaN/inf every `check_every` batches
    def __init__(self, fname='history.csv', rows=None): self.fname, self.rows = fname, list(rows or [])
    def before_train(self): super().before_train(); self.t0, self.tot, self.hits, self.n = time.perf_counter(), 0., 0, 0
    def after_batch(self):
        if not self.training: return
        y = self.yb[0]
        self.tot, self.n = self.tot + self.learn.loss.detach().float()*y.shape[0], self.n + y.shape[0]
        self.hits = self.hits + (self.pred.detach().argmax(-1) == y).sum()
        if self.iter % self.check_every == 0: self._check()
    def _check(self, what='train loss', x=None):
        # one host sync every `check_every` batches, not one a batch; every rank stops at the same batch
        if not torch.isfinite(torch.as_tensor(sum_ranks(self.tot)[0] if x is None else x)):
            raise NonFiniteLoss(f'training stopped: the {what} became NaN or infinite in epoch {self.epoch+1}; '
                                f'the last good checkpoint is kept; a lower learning rate or fp32 may help')
    def epoch_done(self):
        self._check()
        rec, (tot, hits, n) = dict(zip(self.recorder.metric_names, self.recorder.log)), sum_ranks(self.tot, self.hits, self.n)
        self._check('test loss', float(rec['valid_loss']))
        self.rows.append(dict(epoch=self.epoch, train_loss=float(tot/max(n, 1)),
                              train_accuracy=float(hits/max(n, 1)), test_loss=float(rec['valid_loss']),
                              test_accuracy=float(rec.get('valid_accuracy', rec.get('accuracy'))), seconds=time.perf_counter()-self.t0))
        if not rank_distrib(): self.save(self.path/self.fname)
    def save(self, path):
        lines = [','.join(HISTORY_COLS)] + [','.join(f'{r[c]:.6g}' if isinstance(r[c], float) else str(r[c] + 1)
                                                      for c in HISTORY_COLS) for r in self.rows]
        atomic_write(path, lambda p: p.write_text('\n'.join(lines) + '\n'))

def rng_state(learn, aug=None):
    "Every random state a run consumes: torch, numpy, python, the DataLoaders' and the augmentation's."
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # numpy's array as a tensor: the checkpoint holds no pickled objects
    st = dict(torch=torch.get_rng_state(), numpy=(kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss), python=random.getstate(),
              dls=[unwrap_dl(dl).rng.getstate() for dl in learn.dls.loaders])
    if torch.cuda.is_available(): st['cuda'] = torch.cuda.get_rng_state_all()
    if aug is not None: st['aug'] = aug.state() if hasattr(aug, 'state') else (aug.random_generator.bit_generator.state, aug.py_random.getstate())
    return st

def set_rng_state(learn, st, aug=None):
    kind, keys, *rest = st['numpy']
    torch.set_rng_state(st['torch']); np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest)); random.setstate(st['python'])
    for dl, s in zip(learn.dls.loaders, st['dls']): dl.rng.setstate(s)
    if 'cuda' in st and torch.cuda.is_available(): torch.cuda.set_rng_state_all(st['cuda'])
    if aug is not None and 'aug' in st:
        if hasattr(aug, 'set_state'): aug.set_state(st['aug']); return  # fastcifar's BatchAug
        aug.random_generator.bit_generator.state = st['aug'][0]; aug.py_random.setstate(st['aug'][1])

def _plain(o):
    "`o` with numpy scalars as Python numbers: a checkpoint of tensors and plain data loads with `weights_only=True`."
    # fastai's schedulers leave numpy floats in the optimizer's param groups
    if isinstance(o, np.generic): return o.item()
    if isinstance(o, dict): return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, tuple): return tuple(_plain(v) for v in o)
    if isinstance(o, (list, L)): return [_plain(v) for v in o]  # fastai's own optimizers keep fastcore `L`s
    return o

class Checkpoint(EpochCallback):
    "After every epoch, atomically save model, optimizer, epoch, random states and history to `fname`."
    order = 70
    def __init__(self, fname='checkpoint.pth', aug=None, config=None, ema=None):
        self.fname, self.aug, self.config, self.ema = fname, aug, config, ema
    def epoch_done(self):
        rngs = all_ranks(rng_state(self.learn, self.aug))  # each rank's own streams, to resume on as many ranks
        if rank_distrib(): return
        state = dict(model=bare_model(self.model).state_dict(), opt=self.opt.state_dict(), epoch=self.epoch,
                     n_epoch=self.n_epoch, rng=rngs[0], history=self.history.rows, config=self.config)
        if len(rngs) > 1: state['rng_ranks'] = rngs
        if self.ema is not None: state['ema'] = self.ema.state()
        atomic_write(self.path/self.fname, lambda p: torch.save(_plain(state), p))

def plot_curves(rows, fname):
    "Loss and accuracy, train and test, over epochs, from the history rows."
    from matplotlib.figure import Figure  # not pyplot: no backend switch, works in a terminal and leaves notebooks alone
    ep = [r['epoch'] + 1 for r in rows]
    fig = Figure(figsize=(11, 4))
    for ax, what in zip(fig.subplots(1, 2), ('loss', 'accuracy')):
        for split in ('train', 'test'): ax.plot(ep, [r[f'{split}_{what}'] for r in rows], 'o-', ms=3, label=split)
        ax.set(xlabel='epoch', ylabel=what, title=what); ax.grid(alpha=.3); ax.legend()
    fig.tight_layout()
    atomic_write(fname, lambda p: fig.savefig(p, dpi=100, format='png'))

class _Confusion(ClassificationInterpretation):
    "fastai's confusion-matrix plot over a matrix counted during the last test epoch (no second pass over the data)."
    def __init__(self, vocab, cm): self.vocab, self.cm = vocab, cm
    def confusion_matrix(self): return self.cm.copy()

def shift_image(x, d):
    "Images `x` (B,C,H,W) shifted by `d` pixels down and right (negative: up and left), reflect-101 borders."
    # F.pad's 'reflect' mirrors about the edge pixel (cv2's BORDER_REFLECT_101), as the translate augmentation
    a = abs(d)
    p = F.pad(x, (a, a, a, a), mode='reflect')
    h, w = x.shape[-2:]
    return p[..., a - d:a - d + h, a - d:a - d + w]

class RunArtefacts(EpochCallback):
    "Curves as epochs end; at the end the confusion matrix and `results.json` (with `info`), for finite weights only."
    order = 80
    # a plot takes 0.5-1 s on 2 CPU cores: curves.png is redrawn after an epoch once `curves_every` seconds have passed
    # since the fit began or the last redraw, and after the last epoch always. An epoch of a full CPU run takes minutes
    # (every epoch redrawn); short epochs (a GPU's, a small --frac, the tests') skip a plot rather than spend on it
    def __init__(self, info=None, curves_every=10.): self.info, self.cm, self.curves_every = info or {}, None, curves_every
    def before_fit(self): self.plotted = time.monotonic()
    def before_validate(self): self.cm, self.tta_hits, self.multi_hits = None, 0, 0
    def after_pred(self):
        # the mirror image through the model in the batch's own precision (an autocast callback is still active here)
        if self.training or self.epoch != self.n_epoch - 1: return
        x = self.xb[0]
        self.flip_pred = self.model(x.flip(-1)).float()
        # multi-view: each orientation also shifted one pixel diagonally both ways (reflect-101 borders)
        self.shift_probs = sum(self.model(shift_image(v, d)).float().softmax(-1) for v in (x, x.flip(-1)) for d in (1, -1))
    def after_batch(self):
        if self.training: return
        c, y = len(self.dls.vocab), gather(self.learn, self.yb[0].flatten())  # the whole batch, over every rank
        cm = torch.bincount(y*c + gather(self.learn, self.pred.argmax(-1).flatten()), minlength=c*c)
        self.cm = cm if self.cm is None else self.cm + cm
        if self.epoch == self.n_epoch - 1:
            # flip TTA: the image's and its mirror's softmax summed (flips only: no training augmentation); six-view TTA
            # adds each orientation shifted by (1,1) and (-1,-1)
            flip = self.pred.float().softmax(-1) + self.flip_pred.softmax(-1)
            self.tta_hits += (gather(self.learn, flip.argmax(-1)) == y).sum()
            self.multi_hits += (gather(self.learn, (flip + self.shift_probs).argmax(-1)) == y).sum()
    def epoch_done(self):
        if rank_distrib() or (self.epoch < self.n_epoch - 1 and time.monotonic() - self.plotted < self.curves_every): return
        plot_curves(self.history.rows, self.path/'curves.png'); self.plotted = time.monotonic()
    def after_fit(self):
        rows = self.history.rows
        if len(rows) < self.n_epoch: return  # interrupted (e.g. NaN): keep the last checkpoint, no final files
        if self.cm is None:  # resumed after the last epoch: count it once more (on every rank), without the
            with self.learn.removed_cbs(self.learn.cbs.filter(lambda c: isinstance(c, SkipToEpoch))): self.learn.validate()
            # resume's SkipToEpoch, which would cancel that validation as a skipped epoch
        bad = [k for k, v in self.model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad: raise NonFiniteLoss(f'training ended with NaN or infinite weights ({bad[0]}, ...); no results or model written; a lower learning rate may help')
        if rank_distrib(): return  # rank 0 writes the run folder
        self.confusion_matrix()
        accs, n_test = [r['test_accuracy'] for r in rows], int(self.cm.sum())
        res = dict(final_test_accuracy=accs[-1], final_test_accuracy_flip_tta=float(self.tta_hits)/n_test,
                   final_test_accuracy_multi_tta=float(self.multi_hits)/n_test, best_test_accuracy=max(accs), best_epoch=accs.index(max(accs))+1,
                   final_train_accuracy=rows[-1]['train_accuracy'], epochs=len(rows),
                   train_seconds=sum(r['seconds'] for r in rows),
                   seconds_per_epoch=sum(r['seconds'] for r in rows)/len(rows))
        res.update((k, v) for k, v in self.info.items() if k not in res)
        atomic_write(self.path/'results.json', lambda p: p.write_text(json.dumps(res, indent=2) + '\n'))
    def confusion_matrix(self):
        import matplotlib.pyplot as plt
        c = len(self.dls.vocab)
        _Confusion(list(self.dls.vocab), self.cm.view(c, c).cpu().numpy()).plot_confusion_matrix(figsize=(7, 7))
        fig = plt.gcf()
        atomic_write(self.path/'confusion_matrix.png', lambda p: fig.savefig(p, dpi=100, format='png', bbox_inches='tight'))
        plt.close(fig)
