"The run's callbacks on a tiny Learner: history rows, NaN stops, checkpoints that load as plain data, results."
import csv, json, numpy as np, pytest, torch
from collections import Counter
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastcifar.callbacks import CPUAutocast, Checkpoint, History, NonFiniteLoss, RunArtefacts, WeightEMA, rng_state, set_rng_state, shift_image
from fastcifar.data import cifar_dls
from tests.small_models import make

@pytest.fixture
def learn(tiny_tgz, tmp_path):
    "A fresh tiny Learner for each test: nothing a test changes is seen by another."
    torch.manual_seed(0)
    return Learner(cifar_dls(tiny_tgz, bs=32, seed=0), make(), loss_func=CrossEntropyLossFlat(), metrics=accuracy, path=tmp_path)

def test_history_counts_its_own_train_accuracy(learn):
    h = History()
    learn.fit(2, 1e-2, cbs=[h])
    with open(learn.path/'history.csv') as f: rows = list(csv.DictReader(f))
    assert [r['epoch'] for r in rows] == ['1', '2'] and len(h.rows) == 2
    # train accuracy without the Recorder's train metrics; test loss and accuracy are the Recorder's
    assert not learn.recorder.train_metrics and 0 <= h.rows[-1]['train_accuracy'] <= 1
    assert h.rows[-1]['test_accuracy'] == pytest.approx(float(learn.recorder.values[-1][-1]))
    assert h.rows[-1]['test_loss'] == pytest.approx(float(learn.recorder.values[-1][1]))

def test_history_stops_on_a_non_finite_test_loss(learn):
    class Poison(History.__base__):  # a test loss of NaN, as a run whose BatchNorm statistics diverged gives
        order = 60
        def after_loss(self):
            if not self.training: self.learn.loss = self.loss*float('nan')
    with pytest.raises(NonFiniteLoss, match='test loss became NaN or infinite in epoch 1'):
        learn.fit(1, 1e-2, cbs=[Poison(), History()])
    assert not (learn.path/'history.csv').exists()

def test_checkpoint_loads_as_plain_data_and_restores_every_stream(learn):
    ck = Checkpoint(config=dict(random_seed=1))
    learn.fit(1, 1e-2, cbs=[History(), ck])
    st = torch.load(learn.path/'checkpoint.pth', weights_only=True)  # no unpickling of objects
    assert st['epoch'] == 0 and st['config'] == dict(random_seed=1) and set(st['model']) == set(learn.model.state_dict())
    a = rng_state(learn)
    draws = (torch.rand(3), np.random.rand(3), learn.dls.train.rng.random())
    set_rng_state(learn, a)
    again = (torch.rand(3), np.random.rand(3), learn.dls.train.rng.random())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2] == again[2]

def _floats(m): return {k: v.detach().clone() for k, v in m.state_dict().items() if v.is_floating_point()}

def test_weight_ema_averages_every_step_validates_on_the_average_and_leaves_it(learn):
    "EMA of the raw weights after each step (BatchNorm statistics too); validation sees it, training goes on from the raw weights."
    class Watch(History.__base__):
        order = 76  # after WeightEMA (75): sees what it swapped in
        def before_fit(self): self.steps, self.validated, self.restored = [], [], []
        def after_step(self): self.steps.append(_floats(self.model))
        def before_validate(self): self.validated.append(_floats(self.model))
    w, d = Watch(), 0.7
    learn.fit(2, 1e-2, cbs=[WeightEMA(d), w])
    def ema(steps):
        e = dict(steps[0])
        for s in steps[1:]: e = {k: d*e[k] + (1 - d)*s[k] for k in e}
        return e
    n = len(learn.dls.train)
    assert len(w.steps) == 2*n and n > 1
    for k, v in ema(w.steps[:n]).items(): assert torch.allclose(w.validated[0][k], v, atol=1e-6), k  # epoch 1's validation
    final = _floats(learn.model)
    for k, v in ema(w.steps).items(): assert torch.allclose(final[k], v, atol=1e-6), k   # the model after fit
    assert not all(torch.allclose(final[k], w.steps[-1][k]) for k in final)             # ... is not the raw weights

def test_weight_ema_restores_the_raw_weights_after_validation(learn):
    class Watch(History.__base__):
        order = 76
        def after_step(self): self.last = _floats(self.model)
        def after_validate(self): self.after = _floats(self.model)
    w = Watch()
    # WeightEMA (75) restores in its after_validate, which runs before this one's (76)
    learn.fit(1, 1e-2, cbs=[WeightEMA(0.5), w])
    for k, v in w.last.items(): assert torch.equal(w.after[k], v), k

def test_results_need_finite_weights(learn):
    class Break(History.__base__):
        order = 75  # before RunArtefacts (80)
        def after_fit(self):
            with torch.no_grad(): next(self.model.parameters()).fill_(float('inf'))
    with pytest.raises(NonFiniteLoss, match='NaN or infinite weights'):
        learn.fit(1, 1e-2, cbs=[History(), Break(), RunArtefacts()])
    assert not (learn.path/'results.json').exists()

def test_results_and_flip_tta_in_bf16(learn):
    learn.add_cb(CPUAutocast())
    learn.fit(1, 1e-2, cbs=[History(), RunArtefacts(dict(note='x'))])
    res = json.loads((learn.path/'results.json').read_text())
    assert res['note'] == 'x' and res['epochs'] == 1 and 0 <= res['final_test_accuracy_flip_tta'] <= 1
    # flip TTA by hand, in the same precision: the image's and its mirror's softmax averaged
    learn.model.eval()
    hits = multi = n = 0
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        for x, y in learn.dls.valid:
            p = learn.model(x).float().softmax(-1) + learn.model(x.flip(-1)).float().softmax(-1)
            hits, n = hits + (p.argmax(-1) == y).sum().item(), n + len(y)
            # six views: each orientation as is and shifted by one pixel diagonally both ways
            p = p + sum(learn.model(shift_image(v, d)).float().softmax(-1) for v in (x, x.flip(-1)) for d in (1, -1))
            multi += (p.argmax(-1) == y).sum().item()
    assert res['final_test_accuracy_flip_tta'] == pytest.approx(hits/n, abs=1/n + 1e-9)
    assert res['final_test_accuracy_multi_tta'] == pytest.approx(multi/n, abs=1/n + 1e-9)
    for png in ('curves.png', 'confusion_matrix.png'): assert (learn.path/png).stat().st_size > 1000

@pytest.mark.parametrize('every, plots', [(0., [1, 2, 3]), (3600., [3])])
def test_curves_are_redrawn_at_most_every_few_seconds_and_after_the_last_epoch(learn, monkeypatch, every, plots):
    import fastcifar.callbacks as C
    drawn = []
    monkeypatch.setattr(C, 'plot_curves', lambda rows, fname: drawn.append(len(rows)) or C.atomic_write(fname, lambda p: p.write_bytes(b'png')))
    learn.fit(3, 1e-2, cbs=[History(), RunArtefacts(curves_every=every)])
    assert drawn == plots and (learn.path/'curves.png').read_bytes() == b'png'  # each time with the rows so far

def test_shift_image_is_a_reflect_101_translation():
    x = torch.arange(2*3*5*5, dtype=torch.float32).view(2, 3, 5, 5)
    for d in (1, -1, 2):
        s = shift_image(x, d)
        assert s.shape == x.shape
        if d > 0: assert torch.equal(s[..., d:, d:], x[..., :-d, :-d])
        else: assert torch.equal(s[..., :d, :d], x[..., -d:, -d:])
    s = shift_image(x, 1)  # the row and column that come in mirror about the edge pixel (no repeated edge)
    assert torch.equal(s[..., 0, 1:], x[..., 1, :-1]) and torch.equal(s[..., 1:, 0], x[..., :-1, 1])
    cl = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(shift_image(cl, -1), shift_image(x, -1))

class _DeviceOnly(torch.Tensor):
    "A tensor that fails if anything reads it back to the host (as a CUDA tensor would make the host wait)."
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, '__name__', '') in HOST_READS: raise AssertionError(f'host read: {func.__name__}')
        return super().__torch_function__(func, types, args, kwargs or {})

from bench.syncs import HOST_READS

def test_device_smooth_loss_is_fastais_average_without_a_host_read():
    from types import SimpleNamespace as NS
    from fastai.learner import AvgSmoothLoss
    from fastcifar.callbacks import DeviceSmoothLoss
    ours, theirs = DeviceSmoothLoss(), AvgSmoothLoss()
    for x in (2.3, 1.9, 1.7, 2.0, 1.2):
        ours.accumulate(NS(loss=torch.tensor([x, x + 0.2]).as_subclass(_DeviceOnly)))  # a read-back would raise
        theirs.accumulate(NS(loss=torch.tensor([x, x + 0.2])))
        v = ours.value
        assert isinstance(v, _DeviceOnly) and torch.allclose(v.as_subclass(torch.Tensor), theirs.value)

def test_the_training_batches_read_nothing_back_from_the_device(tiny_tgz, tmp_path):
    "Every host read in a training batch of fastcifar's Learner, counted where it is made (bench.syncs): none of the model's or loss's tensors."
    from bench.syncs import host_reads
    from fastcifar.train import seed_learner
    learn = seed_learner(cifar_dls(tiny_tgz, bs=32, seed=0, executor='batch'), path=tmp_path)
    learn.add_cb(History())
    seen = host_reads(learn, epochs=2)
    assert len(learn.recorder.losses) == 2*len(learn.dls.train) and learn.recorder.losses[-1].device.type == 'cpu'
    # What remains is host data by construction: fastai's ParamScheduler evaluates its schedule on Python floats,
    # fastcifar's CPU Dropout draws from the CPU generator, and History checks the loss once every 25 batches.
    assert {s for _, s in seen} == {'schedule.py:_inner', 'model.py:positions', 'callbacks.py:_check'}, Counter(seen)
    assert sum(s == 'callbacks.py:_check' for _, s in seen) == 2  # batch 0 of each epoch (7 batches an epoch)
    assert not any(w == 'cpu' for w, _ in seen)  # fastai's own smoothed loss made one .cpu() a batch
