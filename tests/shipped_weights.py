"An untrained but valid Net written as shipped weights (`fastcifar/weights/` layout), for the tests of shipping and the app"
import json, torch
from pathlib import Path
from types import SimpleNamespace
from fastcifar.export import export_safe
from fastcifar.model import Net
from fastcifar.sources import CLASSES
from fastcifar.synthetic import synthetic_arrays

__all__ = ['SHARPEN', 'write_untrained']

SHARPEN = 10.  # logits scale: the untrained Net's top class is clear and differs between images

def write_untrained(folder, name='untrained', best=True, results=None, seed=0):
    "Write `name.safetensors` + `name.json` (with `results`) of a fresh Net to `folder`, and index.json naming it best"
    torch.manual_seed(seed)
    m = Net()
    # BatchNorm statistics of real-looking inputs (fresh ones, mean 0 and variance 1, squash every image alike)
    for bn in (o for o in m.modules() if isinstance(o, torch.nn.BatchNorm2d)): bn.momentum = None  # a plain average
    with torch.no_grad():
        m.train()(torch.from_numpy(synthetic_arrays(4, 0, seed=seed)[0]).permute(0, 3, 1, 2).float()/255)
        m.out.conv.weight.mul_(SHARPEN)
    m.eval()
    # export_safe needs only what a Learner exports: the model and the class vocabulary (no batch transforms: mean 0, std 1)
    st, js = export_safe(SimpleNamespace(model=m, dls=SimpleNamespace(vocab=CLASSES)), folder, name=name, model_args=dict(dropout=0.05))
    if results is not None: js.write_text(json.dumps({**json.loads(js.read_text()), 'results': results}, indent=2))
    if best: (Path(folder)/'index.json').write_text(json.dumps({'best': name}))
    return js
