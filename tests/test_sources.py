"Tests of `fastcifar.sources.load_cifar` on synthetic data in every format, its cache, bad input, and the real copy"
import os, pickle, shutil, socket, tarfile, urllib.error
from pathlib import Path
import numpy as np, pytest
from PIL import Image
from fastcifar import sources
from fastcifar.sources import CLASSES, Cifar, DataError, cache_root, load_cifar
from fastcifar.synthetic import synthetic_arrays, write_folder, write_pickles, write_pickles_tgz, write_tgz

NTR, NTE = 3, 2  # images per class: tiny, so every test is fast
KW = dict(n_train_per_class=NTR, n_test_per_class=NTE)
from tests.conftest import SHARED as REAL

@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    "Every test caches under its own tmp folder and sees no FASTCIFAR_DATA"
    monkeypatch.setenv('FASTCIFAR_CACHE', str(tmp_path/'cache'))
    monkeypatch.delenv('FASTCIFAR_DATA', raising=False)

def _check(c, ntr=NTR, nte=NTE):
    "Assert `c` is a well-formed `Cifar` with `ntr`/`nte` images per class"
    assert isinstance(c, Cifar) and c.classes == CLASSES
    for x,y,n in ((c.x_train, c.y_train, ntr), (c.x_test, c.y_test, nte)):
        assert x.dtype == np.uint8 and x.shape == (10*n,32,32,3)
        assert y.dtype == np.int64 and y.shape == (10*n,)
        assert (np.bincount(y, minlength=10) == n).all()

def _same_by_class(x, y, x0, y0):
    "Images of each class equal, in order, those of (x0,y0)"
    return all((x[y==c] == x0[y0==c]).all() for c in range(10))

def _npzs(): return list(cache_root().rglob('*.npz'))

def _one_line(e, path):
    "Assert DataError `e` has a one-line message naming `path`"
    msg = str(e.value)
    assert '\n' not in msg and str(path) in msg, msg

# ---------- synthetic data

def test_synthetic_arrays():
    xtr,ytr,xte,yte = synthetic_arrays(**KW)
    assert xtr.shape == (30,32,32,3) and xte.shape == (20,32,32,3) and xtr.dtype == np.uint8 and ytr.dtype == np.int64
    assert all((a == b).all() for a,b in zip(synthetic_arrays(**KW), (xtr,ytr,xte,yte)))  # deterministic
    assert not (synthetic_arrays(**KW, seed=1)[0] == xtr).all()

def test_synthetic_learnable():
    "A nearest-class-mean classifier on the raw pixels is far above chance: classes differ visibly"
    xtr,ytr,xte,yte = synthetic_arrays(20, 10)
    f = lambda x: x.reshape(len(x), -1).astype(np.float32)
    means = np.stack([f(xtr)[ytr==c].mean(0) for c in range(10)])
    pred = ((f(xte)[:,None] - means[None])**2).sum(-1).argmin(1)
    assert (pred == yte).mean() > 0.5

def test_cache_root(tmp_path, monkeypatch):
    assert cache_root() == tmp_path/'cache'
    monkeypatch.delenv('FASTCIFAR_CACHE')
    class Cfg:
        def path(self, k): return tmp_path/'fastai'/k
    monkeypatch.setattr(sources, 'fastai_cfg', Cfg)
    assert cache_root() == tmp_path/'fastai'/'data'/'fastcifar'

# ---------- every source format

@pytest.mark.parametrize('fmt', ['png', 'jpg'])
def test_folder(tmp_path, fmt):
    d = write_folder(tmp_path, **KW, fmt=fmt)
    c = load_cifar(d)
    _check(c)
    assert c.source == str(d)
    xtr,ytr,xte,yte = synthetic_arrays(**KW)
    if fmt == 'png': assert _same_by_class(c.x_train, c.y_train, xtr, ytr) and _same_by_class(c.x_test, c.y_test, xte, yte)
    else: assert np.abs(np.sort(c.x_test.astype(int), 0) - np.sort(xte.astype(int), 0)).mean() < 10  # lossy but close
    for i in range(10):  # labels come from the folder each image is in
        assert (c.y_train[i*NTR:(i+1)*NTR] == i).all()

def test_nested_folder(tmp_path):
    write_folder(tmp_path/'root', **KW)
    _check(load_cifar(tmp_path/'root'))

def test_other_sizes_and_modes(tmp_path):
    d = write_folder(tmp_path, **KW)
    Image.new('L', (40,24), 200).save(d/'train'/'cat'/'9000.png')
    Image.new('RGBA', (32,32), (10,20,30,40)).save(d/'train'/'cat'/'9001.png')
    (d/'train'/'cat'/'.DS_Store').write_bytes(b'\0junk')  # dot-files are skipped
    c = load_cifar(d)
    assert len(c.x_train) == 10*NTR+2 and (c.y_train == 3).sum() == NTR+2
    assert (c.x_train[c.y_train == 3][-2] == 200).all() and (c.x_train[c.y_train == 3][-1] == (10,20,30)).all()

def test_tgz(tmp_path):
    a = write_tgz(tmp_path/'src'/'cifar10.tgz', **KW)
    before = sorted(a.parent.iterdir())
    c = load_cifar(a)
    _check(c)
    assert c.source == str(a) and sorted(a.parent.iterdir()) == before  # nothing written next to the archive
    xtr,ytr,_,_ = synthetic_arrays(**KW)
    assert _same_by_class(c.x_train, c.y_train, xtr, ytr)
    # read into memory, never extracted: the cache holds the decoded arrays only, and they equal the folder's own
    assert not (cache_root()/'extracted').exists() and len(_npzs()) == 1
    f = load_cifar(write_folder(tmp_path/'folder', **KW))
    assert all(np.array_equal(a, b) for a, b in zip((c.x_train, c.y_train, c.x_test, c.y_test), (f.x_train, f.y_train, f.x_test, f.y_test)))

def test_pickles(tmp_path):
    d = write_pickles(tmp_path, **KW)
    with open(d/'data_batch_1', 'rb') as f: b = pickle.load(f, encoding='bytes')
    assert b'data' in b and b[b'data'].shape[1] == 3072  # written like the Python 2 originals
    for src in (d, tmp_path):  # the folder itself, or its parent
        c = load_cifar(src)
        _check(c)
        assert all((a == e).all() for a,e in zip((c.x_train,c.y_train,c.x_test,c.y_test), synthetic_arrays(**KW)))

def test_pickles_tgz(tmp_path):
    a = write_pickles_tgz(tmp_path/'cifar-10-python.tar.gz', **KW)
    c = load_cifar(a)
    _check(c)
    assert (c.x_train == synthetic_arrays(**KW)[0]).all()
    assert not (cache_root()/'extracted').exists()

def test_default_env(tmp_path, monkeypatch):
    d = write_folder(tmp_path, **KW)
    monkeypatch.setenv('FASTCIFAR_DATA', str(d))
    monkeypatch.setattr(sources, 'untar_data', lambda *a, **k: pytest.fail('must not download'))
    c = load_cifar()
    _check(c)
    assert c.source == str(d)

def test_default_untar_data(tmp_path, monkeypatch):
    d = write_folder(tmp_path, **KW)
    monkeypatch.setattr(sources, 'untar_data', lambda url, *a, **k: d if url == sources.URLs.CIFAR else None)
    c = load_cifar()
    _check(c)
    assert c.source == 'URLs.CIFAR'

@pytest.mark.parametrize('exc', [urllib.error.URLError('[Errno -3] Temporary failure in name resolution'),
                                 ConnectionError('Network is unreachable')])
def test_default_offline(monkeypatch, exc):
    def boom(*a, **k): raise exc
    monkeypatch.setattr(sources, 'untar_data', boom)
    with pytest.raises(DataError) as e: load_cifar()
    _one_line(e, sources.URLs.CIFAR)
    assert '--data PATH' in str(e.value) and 'FASTCIFAR_DATA' in str(e.value)

# ---------- decoding once, and the cache

def test_folder_cache_reused(tmp_path, monkeypatch):
    d = write_folder(tmp_path, **KW)
    c1 = load_cifar(d)
    (f,) = _npzs()
    mtime = f.stat().st_mtime_ns
    monkeypatch.setattr(sources, '_decode_folder', lambda *a: pytest.fail('decoded again'))
    c2 = load_cifar(d)
    assert f.stat().st_mtime_ns == mtime and (c1.x_train == c2.x_train).all() and (c1.y_test == c2.y_test).all()

def test_folder_change_redecodes(tmp_path):
    d = write_folder(tmp_path, **KW)
    load_cifar(d)
    shutil.copy(d/'train'/'cat'/'0000.png', d/'train'/'cat'/'0100.png')
    assert len(load_cifar(d).x_train) == 10*NTR+1

def test_archive_cache_reused(tmp_path, monkeypatch):
    a = write_tgz(tmp_path/'cifar10.tgz', **KW)
    c1 = load_cifar(a)
    monkeypatch.setattr(sources, 'extract', lambda *a: pytest.fail('extracted again'))
    monkeypatch.setattr(sources, '_decode_folder', lambda *a: pytest.fail('decoded again'))
    assert (load_cifar(a).x_test == c1.x_test).all()

def test_archives_are_read_not_extracted(tmp_path, monkeypatch):
    "Archives of either layout are read in one pass in memory: nothing is extracted, with or without cached arrays"
    monkeypatch.setattr(tarfile.TarFile, 'extractall', lambda *a, **k: pytest.fail('extracted'))
    monkeypatch.setattr(tarfile.TarFile, 'extract', lambda *a, **k: pytest.fail('extracted'))
    for a in (write_tgz(tmp_path/'cifar10.tgz', **KW), write_pickles_tgz(tmp_path/'cifar-10-python.tar.gz', **KW)):
        _check(load_cifar(a))
        for f in _npzs(): f.unlink()
        _check(load_cifar(a))
    assert not (cache_root()/'extracted').exists()

def test_an_archives_old_extraction_goes_once_its_arrays_are_decoded(tmp_path):
    a, other = write_tgz(tmp_path/'cifar10.tgz', **KW), write_tgz(tmp_path/'other'/'cifar10.tgz', **KW)
    old, kept = sources.extract(a), sources.extract(other)  # as fastcifar left them before it read archives in memory
    _check(load_cifar(a))
    assert not old.exists() and kept.is_dir() and (kept/'cifar10'/'train'/'cat').is_dir()  # another archive's stays

def test_an_archive_in_tars_own_layout_loads(tmp_path):
    "Members named ./cifar10/..., folders listed after their files or not at all, links elsewhere: the same arrays"
    src = write_folder(tmp_path/'src', **KW)
    a = tmp_path/'odd.tar'
    with tarfile.open(a, 'w') as tf:
        for f in sorted(src.rglob('*'), reverse=True):  # files before their folders
            if f.is_file(): tf.add(f, f'./cifar10/{f.relative_to(src)}')
        link = tarfile.TarInfo('./cifar10/README'); link.type, link.linkname = tarfile.SYMTYPE, '/etc/passwd'
        tf.addfile(link)  # outside the images: not read, and not followed
    c, f = load_cifar(a), load_cifar(src)
    assert all(np.array_equal(x, y) for x, y in zip((c.x_train, c.y_train, c.x_test, c.y_test), (f.x_train, f.y_train, f.x_test, f.y_test)))

def test_a_link_among_an_archives_images_is_one_line(tmp_path):
    src = write_folder(tmp_path/'src', **KW)
    a = tmp_path/'linked.tgz'
    with tarfile.open(a, 'w:gz') as tf:
        tf.add(src, 'cifar10')
        link = tarfile.TarInfo('cifar10/train/dog/zz.png'); link.type, link.linkname = tarfile.SYMTYPE, '/etc/passwd'
        tf.addfile(link)
    with pytest.raises(DataError, match='unreadable entry among the images') as e: load_cifar(a)
    _one_line(e, f'{a}/cifar10/train/dog/zz.png')
    assert not _npzs()

def test_an_archive_far_larger_than_cifar10_is_refused_before_it_is_read(tmp_path, monkeypatch):
    a = write_tgz(tmp_path/'big.tgz', **KW)
    monkeypatch.setattr(sources, '_MAX_ARCHIVE', 2 << 10)  # 2 KB: the tiny copy holds more
    with pytest.raises(DataError, match='far more than any CIFAR-10 copy') as e: load_cifar(a)
    _one_line(e, a)
    assert not _npzs()

def test_many_images_decode_in_worker_processes_in_order(tmp_path, monkeypatch):
    "Past `_PARALLEL` images the decoding is split across processes: the same arrays, and a bad image named as before"
    d = write_folder(tmp_path/'d', **KW)
    one = load_cifar(d)
    for f in _npzs(): f.unlink()
    calls = []
    monkeypatch.setattr(sources, '_PARALLEL', 2)
    import fastcore.parallel
    real = fastcore.parallel.parallel
    monkeypatch.setattr(fastcore.parallel, 'parallel', lambda f, items, **kw: calls.append(len(items)) or real(f, items, **kw))
    monkeypatch.setattr(fastcore.parallel, 'num_cpus', lambda: 2)
    many = load_cifar(d)
    assert calls == [2, 2] and all(np.array_equal(x, y) for x, y in zip((one.x_train, one.x_test), (many.x_train, many.x_test)))
    for f in _npzs(): f.unlink()
    bad = sorted((d/'train'/'truck').iterdir())[-1]  # the last image: in the second worker's half
    bad.write_text('not an image')
    with pytest.raises(DataError, match='not an image file') as e: load_cifar(d)
    _one_line(e, bad)

def test_corrupt_npz_redecoded(tmp_path):
    d = write_folder(tmp_path, **KW)
    load_cifar(d)
    (f,) = _npzs()
    f.write_bytes(f.read_bytes()[:100])
    _check(load_cifar(d))

def test_interrupted_extraction(tmp_path, monkeypatch):
    "An extraction (`extract`, which bench.inference uses) that dies midway leaves nothing trusted; the next extracts again"
    a = write_tgz(tmp_path/'cifar10.tgz', **KW)
    orig = tarfile.TarFile.extractall
    def dies(self, path, *args, **kw):
        orig(self, path, members=self.getmembers()[:20], filter='data')
        raise KeyboardInterrupt
    monkeypatch.setattr(tarfile.TarFile, 'extractall', dies)
    with pytest.raises(KeyboardInterrupt): sources.extract(a)
    assert not list((cache_root()/'extracted').iterdir())
    monkeypatch.setattr(tarfile.TarFile, 'extractall', orig)
    _check(load_cifar(sources.extract(a)))

def test_leftover_part_ignored(tmp_path):
    "Folders a killed extraction left behind are not trusted, and this machine's dead ones are removed"
    a = write_tgz(tmp_path/'cifar10.tgz', **KW)
    st = a.stat()
    name = f'cifar10-{sources._where(a)}-{st.st_size}-{st.st_mtime_ns}'
    ex = cache_root()/'extracted'
    dead, other = ex/f'.{name}.part-{socket.gethostname()}-99999999', ex/f'.{name}.part-otherhost-1'
    for p in (dead, other): (p/'cifar10'/'train').mkdir(parents=True)
    _check(load_cifar(sources.extract(a)))
    assert (ex/name/'cifar10'/'test'/'truck').is_dir() and not dead.exists() and other.exists()

# ---------- bad input: one-line DataError naming the path, nothing trusted left in the cache

def _rm(p): shutil.rmtree(p)
def _truncate(f): f.write_bytes(f.read_bytes()[:len(f.read_bytes())//2]); return f
def _repickle(f, **kv):
    "Rewrite batch pickle `f` with its entries `kv` replaced"
    with open(f, 'rb') as fh: b = pickle.load(fh, encoding='bytes')
    b.update({k.encode(): v for k,v in kv.items()})
    with open(f, 'wb') as fh: pickle.dump(b, fh, protocol=2)
    return f

def _bad_folder(t, how):
    "(source, path the message must name) for a folder made bad in way `how`"
    d = write_folder(t, **KW)
    if how == 'no train': _rm(d/'train'); return d, d
    if how == 'no test': _rm(d/'test'); return d, d
    if how == 'class missing': _rm(d/'test'/'dog'); return d, d/'test'/'dog'
    if how == 'extra class': (d/'train'/'unicorn').mkdir(); return d, d/'train'/'unicorn'
    if how == 'empty class': _rm(d/'train'/'frog'); (d/'train'/'frog').mkdir(); return d, d/'train'/'frog'
    if how == 'truncated image': return d, _truncate(d/'train'/'cat'/'0001.png')
    if how == 'not an image': f = d/'test'/'ship'/'notes.txt'; f.write_text('hello'); return d, f
    if how == 'empty image': f = d/'test'/'ship'/'0000.png'; f.write_bytes(b''); return d, f

def _bad(t, how):
    "(source, path the message must name) for bad input `how`"
    if how == 'missing': return t/'nope', t/'nope'
    if how == 'empty folder': (t/'e').mkdir(); (t/'e'/'.hidden').write_text('x'); return t/'e', t/'e'
    if how == 'unrelated folder': (t/'u'/'photos').mkdir(parents=True); (t/'u'/'a.txt').write_text('x'); return t/'u', t/'u'
    if how == 'not an archive': f = t/'data.csv'; f.write_text('a,b\n'); return f, f
    if how == 'truncated tgz': return _truncate(write_tgz(t/'c.tgz', **KW)), t/'c.tgz'
    if how == 'corrupt tgz': f = t/'c.tgz'; f.write_bytes(os.urandom(5000)); return f, f
    if how == 'truncated pickles tgz': return _truncate(write_pickles_tgz(t/'p.tar.gz', **KW)), t/'p.tar.gz'
    if how.startswith('pickle'):
        d = write_pickles(t, **KW)
        b = d/'data_batch_2'
        if how == 'pickle data shape': return d, _repickle(b, data=np.zeros((6,3071), np.uint8))
        if how == 'pickle data dtype': return d, _repickle(b, data=np.zeros((6,3072), np.float32))
        if how == 'pickle labels length': return d, _repickle(b, labels=[0]*5)
        if how == 'pickle labels range': return d, _repickle(b, labels=[0,1,2,3,4,10])
        if how == 'pickle garbage': b.write_bytes(b'not a pickle at all'); return d, b
        if how == 'pickle truncated': return d, _truncate(b)
        if how == 'pickle missing batch': (d/'test_batch').unlink(); return d, d
        if how == 'pickle wrong classes':
            with open(d/'batches.meta', 'wb') as f: pickle.dump({b'label_names': [b'a']*10}, f, protocol=2)
            return d, d/'batches.meta'
    return _bad_folder(t, how)

BAD = ['missing', 'empty folder', 'unrelated folder', 'not an archive', 'truncated tgz', 'corrupt tgz', 'truncated pickles tgz',
       'no train', 'no test', 'class missing', 'extra class', 'empty class', 'truncated image', 'not an image', 'empty image',
       'pickle data shape', 'pickle data dtype', 'pickle labels length', 'pickle labels range', 'pickle garbage',
       'pickle truncated', 'pickle missing batch', 'pickle wrong classes']

@pytest.mark.parametrize('how', BAD)
def test_bad_input(tmp_path, how):
    src, path = _bad(tmp_path, how)
    with pytest.raises(DataError) as e: load_cifar(src)
    _one_line(e, path)
    assert not _npzs()
    ex = cache_root()/'extracted'
    if ex.exists(): assert not [p for p in ex.iterdir() if 'tgz' in how]  # a bad archive leaves no extraction

def test_bad_archive_not_trusted_later(tmp_path):
    "After a truncated archive fails, the repaired archive of the same name loads"
    a = write_tgz(tmp_path/'cifar10.tgz', **KW)
    good = a.read_bytes()
    _truncate(a)
    with pytest.raises(DataError): load_cifar(a)
    a.write_bytes(good)
    _check(load_cifar(a))

# ---------- the real copy

@pytest.fixture(scope='session')
def real_cache(tmp_path_factory):
    "The session's FASTCIFAR_CACHE (the user's, or conftest's), so the real copy is decoded once per session; else a folder of ours"
    if c := os.environ.get('FASTCIFAR_CACHE'): yield Path(c); return  # session fixtures run before `_env` patches it
    d = tmp_path_factory.mktemp('real_cache')
    yield d
    shutil.rmtree(d, ignore_errors=True)

def test_real_cifar10(real_cache, monkeypatch):
    if not REAL.exists(): pytest.skip(f'no real CIFAR-10 copy at {REAL} (set FASTCIFAR_DATA to one)')
    monkeypatch.setenv('FASTCIFAR_CACHE', str(real_cache))
    for c in (load_cifar(REAL), load_cifar(REAL)):  # decoded once, then from the cache
        assert c.x_train.shape == (50000,32,32,3) and c.x_test.shape == (10000,32,32,3)
        assert (np.bincount(c.y_train) == 5000).all() and (np.bincount(c.y_test) == 1000).all()
        assert c.x_train.dtype == np.uint8 and c.y_train.dtype == np.int64 and c.classes == CLASSES
        assert 100 < c.x_train[:1000].mean() < 150  # real photos, not blank

# ---------- caches keyed by content; bad files inside the data

def test_images_replaced_in_place_are_decoded_again(tmp_path):
    d = write_folder(tmp_path, **KW)
    first = load_cifar(d)
    f = sorted((d/'train'/'cat').iterdir())[0]
    st = f.stat()
    new = np.full((32, 32, 3), 7, np.uint8)
    Image.fromarray(new).save(f)  # same name, same folder: the folder's own stamp does not change
    os.utime(f.parent, ns=(st.st_atime_ns, st.st_mtime_ns)); os.utime(d/'train', ns=(st.st_atime_ns, st.st_mtime_ns))
    again = load_cifar(d)
    i = list(CLASSES).index('cat')
    assert np.array_equal(again.x_train[again.y_train == i][0], new) and not np.array_equal(first.x_train[first.y_train == i][0], new)
    assert len(_npzs()) == 1  # the stale arrays of the same folder are gone

def test_changed_archive_replaces_its_extraction_and_arrays(tmp_path):
    a = write_tgz(tmp_path/'c.tgz', **KW)
    first = load_cifar(a); sources.extract(a)
    write_tgz(a, **KW, seed=5); os.utime(a, ns=(1, 10**18))
    again = load_cifar(a); sources.extract(a)
    assert len(list((cache_root()/'extracted').iterdir())) == 1 and len(_npzs()) == 1
    assert not np.array_equal(first.x_train, again.x_train)

def test_decompression_bomb_in_the_data_is_one_line(tmp_path, monkeypatch):
    d = write_folder(tmp_path, **KW)
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)  # a 32x32 image is 10 times the limit: PIL's bomb error
    with pytest.raises(DataError, match='too large to decode safely') as e: load_cifar(d)
    _one_line(e, d/'train'/'airplane'/'0000.png')  # the first image read

def test_symlink_loop_in_the_data_is_one_line(tmp_path):
    d = write_folder(tmp_path, **KW)
    loop = d/'train'/'dog'/'zz.png'
    os.symlink(loop, loop)
    with pytest.raises(DataError, match='unreadable entry among the images') as e: load_cifar(d)
    _one_line(e, loop)

def test_cache_path_that_is_a_file(tmp_path, monkeypatch):
    (tmp_path/'cachefile').write_text('x')
    monkeypatch.setenv('FASTCIFAR_CACHE', str(tmp_path/'cachefile'))
    with pytest.raises(DataError, match='FASTCIFAR_CACHE') as e: sources.extract(write_tgz(tmp_path/'c.tgz', **KW))
    assert '\n' not in str(e.value)
    with pytest.warns(UserWarning, match='could not cache'): _check(load_cifar(tmp_path/'c.tgz'))
    with pytest.warns(UserWarning, match='could not cache'): _check(load_cifar(write_folder(tmp_path, **KW)))
    assert (tmp_path/'cachefile').read_text() == 'x'

def test_a_crafted_pickle_runs_no_code(tmp_path):
    d = write_pickles(tmp_path, **KW)
    pwned = tmp_path/'pwned'
    class Evil:
        def __reduce__(self): return (os.system, (f'touch {pwned}',))
    with open(d/'data_batch_3', 'wb') as f: pickle.dump({b'data': Evil(), b'labels': []}, f, protocol=2)
    with pytest.raises(DataError, match='never holds; not loaded') as e: load_cifar(d)
    _one_line(e, d/'data_batch_3')
    assert not pwned.exists()
