"The exported model's weights-only format: written with what rebuilds the model, read without unpickling or fastai."
import json, subprocess, sys, pytest, torch
from types import SimpleNamespace as NS
from fastcifar.export import FORMAT_VERSION, ModelError, export_safe, read_safe
from fastcifar.model import Net
from fastcifar.sources import CLASSES

def _learn(model): return NS(model=model, dls=NS(vocab=list(CLASSES)))  # all export_safe reads of a Learner

def test_model_args_rebuild_the_model(tmp_path):
    torch.manual_seed(0)
    m = Net(dropout=0.2)
    st, js = export_safe(_learn(m), tmp_path, model_args=dict(dropout=0.2))
    cfg = json.loads(js.read_text())
    assert cfg['version'] == FORMAT_VERSION and cfg['model'] == 'fastcifar.model:Net' and cfg['model_args'] == {'dropout': 0.2}
    back, _ = read_safe(js)
    assert [x.p for x in back.modules() if isinstance(x, torch.nn.Dropout)] == [0.2]*8
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(back.eval()(x), m.eval()(x))

def test_a_description_may_not_call_what_it_likes(tmp_path):
    _, js = export_safe(_learn(Net()), tmp_path)
    cfg = json.loads(js.read_text())
    for spec, words in (('fastcifar.export:export_safe', 'not an nn.Module class'), ('os:system', 'outside the fastcifar package')):
        (tmp_path/'m.json').write_text(json.dumps({**cfg, 'model': spec}))
        with pytest.raises(ModelError, match=words): read_safe(tmp_path/'m.json')

def test_reading_imports_no_fastai(tmp_path):
    export_safe(_learn(Net()), tmp_path)
    code = f"import sys; from fastcifar.export import read_safe; read_safe({str(tmp_path/'model.json')!r}); print(any(m.startswith('fastai') for m in sys.modules))"
    assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.strip() == 'False'

def test_ship_a_run(tmp_path):
    "`ship` copies a run's weights-only pair as NAME with its results.json; refuses bad names, missing files, replacing"
    from tests.shipped_weights import write_untrained
    from fastcifar.export import ship
    from fastcifar.predict import load_model
    run = tmp_path/'run-1'; write_untrained(run, 'model', best=False)
    (run/'results.json').write_text(json.dumps({'final_test_accuracy': 0.5, 'recipe': 'seed', 'aug_spec': 'readme'}))
    dest = tmp_path/'weights'
    js = ship(run, 'seed', dest, best=True)
    cfg = json.loads(js.read_text())
    assert (cfg['weights'], cfg['run']) == ('seed.safetensors', 'run-1') and cfg['results']['final_test_accuracy'] == 0.5
    assert cfg['recipe'] == 'seed-readme'  # today's name of what the run recorded as 'seed' with the README's augmentation
    assert (dest/'seed.safetensors').read_bytes() == (run/'model.safetensors').read_bytes()
    assert json.loads((dest/'index.json').read_text()) == {'best': 'seed'}
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(load_model(js).model(x), load_model(run/'model.json').model(x))
    before = js.read_bytes()
    with pytest.raises(ModelError, match='seed.json exists'): ship(run, 'seed', dest)
    assert js.read_bytes() == before
    ship(run, 'seed', dest, replace=True)
    for bad in ('Seed', '../x', 'index', ''):
        with pytest.raises(ModelError, match='a shipped name is'): ship(run, bad, dest)
    (run/'results.json').unlink()
    with pytest.raises(ModelError, match='has no results.json'): ship(run, 'other', dest)
    assert not (dest/'other.json').exists()
