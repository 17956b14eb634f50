"Tiny synthetic CIFAR-10-like data sets, written in every format `load_cifar` reads (for tests and notebooks)"
__all__ = ['synthetic_arrays', 'write_folder', 'write_tgz', 'write_pickles', 'write_pickles_tgz']

import pickle, tarfile, tempfile
from pathlib import Path
import numpy as np
from PIL import Image
from .sources import CLASSES

_PALETTE = np.array([(230,40,40),(40,200,40),(40,80,230),(230,200,30),(200,40,200),
                     (30,200,200),(240,130,20),(120,60,20),(150,150,150),(20,20,90)], np.float32)

def _images(y, rng):
    "One 32x32 RGB image per label in `y`: class colour times class-oriented stripes, plus noise"
    yy,xx = np.mgrid[0:32,0:32].astype(np.float32)
    ang,phase = y*np.pi/10, rng.uniform(0, 2*np.pi, len(y))  # stripe orientation 0°,18°,...,162° by class
    t = xx*np.cos(ang)[:,None,None] + yy*np.sin(ang)[:,None,None]
    wave = np.sin(2*np.pi*t/8 + phase[:,None,None])[...,None]
    col = _PALETTE[y][:,None,None,:] * rng.uniform(0.8, 1.2, (len(y),1,1,3))
    x = col*(0.55+0.45*wave) + rng.normal(0, 15, (len(y),32,32,3))
    return np.clip(x, 0, 255).round().astype(np.uint8)

def synthetic_arrays(n_train_per_class=10, n_test_per_class=4, seed=0):
    "(x_train,y_train,x_test,y_test): uint8 (N,32,32,3) images and int64 labels, train shuffled, test by class"
    rng = np.random.default_rng(seed)
    y_train = rng.permutation(np.repeat(np.arange(10), n_train_per_class)).astype(np.int64)
    y_test = np.repeat(np.arange(10), n_test_per_class).astype(np.int64)
    return _images(y_train, rng), y_train, _images(y_test, rng), y_test

def write_folder(root, n_train_per_class=10, n_test_per_class=4, fmt='png', seed=0):
    "Write fastai's `URLs.CIFAR` layout (`train/<class>/NNNN.<fmt>`, `test/...`, `labels.txt`) to `root/'cifar10'`"
    ext = {'png':'.png', 'jpg':'.jpg', 'jpeg':'.jpg'}[fmt.lower()]
    xtr,ytr,xte,yte = synthetic_arrays(n_train_per_class, n_test_per_class, seed)
    d = Path(root)/'cifar10'
    for split,xs,ys in (('train',xtr,ytr), ('test',xte,yte)):
        for c in CLASSES: (d/split/c).mkdir(parents=True, exist_ok=True)
        n = [0]*10
        for x,y in zip(xs,ys):  # numbered in array order within each class, so sorted names keep that order
            Image.fromarray(x).save(d/split/CLASSES[y]/f'{n[y]:04d}{ext}', **({'quality':95} if ext=='.jpg' else {}))
            n[y] += 1
    (d/'labels.txt').write_text('\n'.join(CLASSES)+'\n')
    return d

def _tar(path, src, arcname):
    "Write `src` as `arcname/` into the gzipped tar `path`"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, 'w:gz') as tf: tf.add(src, arcname=arcname)
    return path

def write_tgz(path, **kw):
    "Write a `.tgz` of `write_folder`'s output (top folder `cifar10/`) to `path`"
    with tempfile.TemporaryDirectory() as tmp: return _tar(path, write_folder(tmp, **kw), 'cifar10')

def write_pickles(root, n_train_per_class=10, n_test_per_class=4, seed=0):
    "Write `root/'cifar-10-batches-py'` like the real Python 2 files: protocol 2, bytes keys, uint8 (n,3072) rows"
    xtr,ytr,xte,yte = synthetic_arrays(n_train_per_class, n_test_per_class, seed)
    d = Path(root)/'cifar-10-batches-py'
    d.mkdir(parents=True, exist_ok=True)
    rows = lambda x: np.ascontiguousarray(x.transpose(0,3,1,2).reshape(len(x), 3072))  # 1024 R, 1024 G, 1024 B
    def dump(name, label, x, y, start=0):
        b = {b'batch_label': label.encode(), b'labels': [int(o) for o in y], b'data': rows(x),
             b'filenames': [f'synthetic_{start+i:05d}.png'.encode() for i in range(len(y))]}
        with open(d/name, 'wb') as f: pickle.dump(b, f, protocol=2)
    start = 0
    for i,idx in enumerate(np.array_split(np.arange(len(ytr)), 5), 1):
        dump(f'data_batch_{i}', f'training batch {i} of 5', xtr[idx], ytr[idx], start)
        start += len(idx)
    dump('test_batch', 'testing batch 1 of 1', xte, yte)
    meta = {b'label_names': [c.encode() for c in CLASSES], b'num_cases_per_batch': -(-len(ytr)//5), b'num_vis': 3072}
    with open(d/'batches.meta', 'wb') as f: pickle.dump(meta, f, protocol=2)
    return d

def write_pickles_tgz(path, **kw):
    "Write `cifar-10-python.tar.gz`-style archive of `write_pickles`'s output (top folder `cifar-10-batches-py/`)"
    with tempfile.TemporaryDirectory() as tmp: return _tar(path, write_pickles(tmp, **kw), 'cifar-10-batches-py')
