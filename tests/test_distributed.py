import csv, importlib.util, json, os, subprocess, sys, pytest, torch
from pathlib import Path
from fastai.learner import load_learner
from fastcifar.data import cifar_dls
from fastcifar.train import TrainError, train
from fastcifar import distributed as D
from fastcifar.model import bare_model
from fastcifar.files import MARKER

ROOT = Path(__file__).resolve().parents[1]
FILES = {'history.csv', 'curves.png', 'confusion_matrix.png', 'results.json', 'model.pkl', 'model.safetensors', 'model.json',
         'checkpoint.pth', MARKER, '.lock'}
HAS_ACCELERATE = importlib.util.find_spec('accelerate') is not None

def weights(f, key='model'): return torch.load(f, weights_only=True)[key]
def history(out):
    with open(out/'history.csv') as f: return list(csv.DictReader(f))
def same(a, b): return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)

@pytest.fixture(scope='module')
def run_2proc(tiny_tgz, tmp_path_factory):
    "`accelerate launch -m fastcifar.train` on 2 CPU processes (gloo): 2 epochs of 200 images at 16 a process."
    if not HAS_ACCELERATE: pytest.skip('accelerate is not installed (pip install fastcifar[distributed])')
    tmp = tmp_path_factory.mktemp('ddp')
    out, dump = tmp/'run', tmp/'ranks'
    dump.mkdir()
    # `--multi_gpu` is accelerate's torchrun launcher, which is what starts several processes; with `--cpu` it starts
    # one (its CPU multi-process path is mpirun). Without a visible GPU each process joins a gloo group on the CPU.
    # (`python -m accelerate.commands.launch` is `accelerate launch`, without relying on PATH.)
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
           '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', '0',
           'tests/rank_dump.py', str(dump), '--data', str(tiny_tgz), '--out', str(out), '--epochs', '2', '--bs', '16',
           '--precision', 'fp32']  # as model.pkl predicts: its test metrics can be compared
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, dump

def test_two_processes_write_one_complete_run_folder(run_2proc):
    out, _ = run_2proc
    assert {f.name for f in out.iterdir()} == FILES  # no leftovers of a second writer (temp files)
    for f in FILES - {'.lock'}: assert (out/f).stat().st_size > 0, f  # the lock file is empty: flock needs no content
    assert [r['epoch'] for r in history(out)] == ['1', '2']
    res = json.loads((out/'results.json').read_text())
    assert res['world_size'] == 2 and res['bs'] == 16 and res['effective_bs'] == 32 and res['lr'] == 0.05
    assert res['epochs'] == 2 and res['params'] == 193_280
    ck = torch.load(out/'checkpoint.pth', weights_only=True)
    assert ck['config']['world_size'] == 2 and len(ck['rng_ranks']) == 2 and not any(k.startswith('module.') for k in ck['model'])

def test_each_rank_trains_its_shard_to_the_same_weights(run_2proc):
    out, dump = run_2proc
    r0, r1 = (torch.load(dump/f'rank{r}.pth', weights_only=True) for r in (0, 1))
    assert (r0['rank'], r1['rank'], r0['world_size']) == (0, 1, 2)
    assert r0['train_iter'] == r1['train_iter'] == 2*7  # 100 of the 200 images a rank, at 16: 7 steps, not 13
    assert r0['aug'] != r1['aug']  # each rank its own augmentation draws
    assert same(r0['model'], r1['model'])  # parameters and BatchNorm statistics, bit for bit
    assert same(r0['model'], weights(out/'checkpoint.pth'))

def test_reported_test_metrics_are_the_exported_models(run_2proc, tiny_tgz):
    "The test loss and accuracy gathered from both shards are what model.pkl gives on the whole test set."
    out, _ = run_2proc
    last = history(out)[-1]
    learn = load_learner(out/'model.pkl')
    learn.dls = cifar_dls(tiny_tgz, bs=16)
    with learn.no_bar(): loss, acc = learn.validate()
    assert float(last['test_loss']) == pytest.approx(loss, rel=1e-5) and float(last['test_accuracy']) == pytest.approx(acc, abs=1e-6)
    hits, n = 0, 0  # flip TTA, counted by RunArtefacts over both shards
    learn.model.eval()
    with torch.no_grad():
        for x, y in learn.dls.valid:
            hits += ((learn.model(x).softmax(-1) + learn.model(x.flip(-1)).softmax(-1)).argmax(-1) == y).sum().item(); n += len(y)
    assert n == 50 and json.loads((out/'results.json').read_text())['final_test_accuracy_flip_tta'] == pytest.approx(hits/n)

def test_single_process_is_world_size_one(tiny_tgz, tmp_path):
    assert D.world_size() == 1
    x = torch.arange(3.)
    s = D.sum_ranks(x, 2)
    assert s[0] is x and s[1] == 2 and D.all_ranks('a') == ['a'] and D.from_rank0('b') == 'b'
    learn = train(tiny_tgz, tmp_path/'r', epochs=1, bs=32, show=False)
    assert D.gather(learn, x) is x and bare_model(learn.model) is learn.model
    res = json.loads((tmp_path/'r'/'results.json').read_text())
    assert res['world_size'] == 1 and res['effective_bs'] == res['bs'] == 32
    ck = torch.load(tmp_path/'r'/'checkpoint.pth', weights_only=True)
    assert 'rng_ranks' not in ck and ck['config']['world_size'] == 1 and same(ck['model'], learn.model.state_dict())

def test_several_processes_without_accelerate_is_a_clear_error(tiny_tgz, tmp_path, monkeypatch):
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setitem(sys.modules, 'accelerate', None)  # as if not installed
    with pytest.raises(TrainError, match=r'needs accelerate: pip install fastcifar\[distributed\]'):
        train(tiny_tgz, tmp_path/'r', epochs=1, show=False)
    assert not (tmp_path/'r').exists()
