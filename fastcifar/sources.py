"Turn any real copy of CIFAR-10 (fastai folder, .tgz, original pickles, `URLs.CIFAR`) into decoded arrays, once, cached"
__all__ = ['CLASSES', 'DataError', 'Cifar', 'cache_root', 'find_cifar', 'extract', 'load_cifar']

import hashlib, io, lzma, os, pickle, posixpath, re, shutil, socket, tarfile, warnings, zlib
from dataclasses import dataclass
from pathlib import Path
import numpy as np
from PIL import Image, UnidentifiedImageError
from .images import SIZE, to_rgb32
from .files import atomic_write

# fastai.data.external (URLs, fastai_cfg, untar_data) is imported on first use, not here: importing this module
# stays cheap.
_LAZY = ('URLs', 'fastai_cfg', 'untar_data')

def __getattr__(name):
    "`sources.URLs`, `sources.fastai_cfg`, `sources.untar_data`: fastai's, imported on first access"
    if name in _LAZY:
        from fastai.data import external
        return getattr(external, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

def _fastai(name):
    "fastai's `name`, or the module attribute that replaces it (a test's monkeypatch)"
    return globals()[name] if name in globals() else __getattr__(name)

CLASSES = ('airplane','automobile','bird','cat','deer','dog','frog','horse','ship','truck')  # CIFAR-10 order
_BATCHES = tuple(f'data_batch_{i}' for i in range(1,6)) + ('test_batch',)
_ARCHIVES = ('.tgz', '.tar.gz', '.tar', '.tar.bz2', '.tbz2', '.tar.xz', '.txz')
_KEYS = ('x_train', 'y_train', 'x_test', 'y_test')
_VERSION = 2  # bump when decoding changes, so old cached arrays are not reused (2: EXIF orientation, 16-bit/float)
_NAMES = ' '.join(CLASSES)
_HELP = 'point at a local copy with --data PATH or FASTCIFAR_DATA (a folder, .tgz or cifar-10-batches-py copy)'

class DataError(Exception):
    "An expected problem with the user's data: a one-line message naming the problem, the path and what to do"
    def __init__(self, msg): super().__init__(' '.join(str(msg).splitlines()))

@dataclass(eq=False)
class Cifar:
    "Decoded CIFAR-10: uint8 (N,32,32,3) RGB images and int64 indices into `classes`"
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple = CLASSES
    source: str = ''
    def __repr__(self): return f'Cifar({len(self.x_train)} train, {len(self.x_test)} test, source={self.source!r})'

def cache_root():
    "Where decoded arrays (and `extract`'s folders) go: env FASTCIFAR_CACHE, else fastai's data folder/'fastcifar'"
    e = os.environ.get('FASTCIFAR_CACHE')
    return Path(e).expanduser() if e else _fastai('fastai_cfg')().path('data')/'fastcifar'

def _ls(d):
    "Sorted non-hidden entries of folder `d` (on disk, or `_InArchive`)"
    if isinstance(d, _InArchive): return [e for e in d.scandir() if not e.name.startswith('.')]
    with os.scandir(d) as it: return sorted((e for e in it if not e.name.startswith('.')), key=lambda e: e.name)

def _kind(d):
    "'folder' or 'pickles' if `d` holds that CIFAR-10 layout, else None"
    names = {e.name for e in _ls(d)}
    if {'train','test'} & names: return 'folder'
    if names & {*_BATCHES, 'batches.meta'}: return 'pickles'

def find_cifar(p, desc=None):
    "(kind, folder) of the CIFAR-10 copy in `p` or one level down"
    if k := _kind(p): return k, p
    subs = [p/e.name for e in _ls(p) if e.is_dir()]
    hits = [(k,o) for o in subs if (k := _kind(o))]
    if len(hits) == 1: return hits[0]
    where = desc or p
    if len(hits) > 1:
        raise DataError(f'several CIFAR-10 copies in {where}: {", ".join(str(o) for _,o in hits)}; pass one of them')
    if not _ls(p): raise DataError(f'empty {"archive" if isinstance(p, _InArchive) else "folder"}: {where}; {_HELP}')
    raise DataError(f'no CIFAR-10 data in {where}: expected train/<class>/ and test/<class>/ image folders, '
                    f'the cifar-10-batches-py pickles, or one folder holding either; {_HELP}')

def _folder_files(root):
    "{'train': (files, labels), 'test': ...} of fastai's folder layout at `root` (checked), and a stamp of every file"
    res, stamp = {}, hashlib.sha1()
    for split in ('train','test'):
        d = root/split
        if not d.is_dir():
            raise DataError(f'wrong layout: no {split}/ folder in {root}; expected {split}/<class>/<images> for the classes {_NAMES}')
        if bad := next((e for e in _ls(d) if e.name not in CLASSES or not e.is_dir()), None):
            raise DataError(f'wrong layout: unexpected {"class folder" if bad.is_dir() else "file"} {bad.path}; '
                            f'the class folders of {d} must be exactly: {_NAMES}')
        files, labels = [], []
        for i,c in enumerate(CLASSES):
            if not (d/c).is_dir(): raise DataError(f'wrong layout: class folder {d/c} is missing; add it or {_HELP}')
            es = _ls(d/c)
            if not es: raise DataError(f'no images in class folder {d/c}; each class needs its images')
            for e in es:
                try: st = e.stat()  # follows links: a loop or a dangling link fails here
                except OSError as err: raise DataError(f'unreadable entry among the images: {e.path} ({err.strerror}); remove it') from None
                if not e.is_file(): raise DataError(f'unexpected folder among the images: {e.path}; remove it')
                stamp.update(f'{e.path}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode())
            files += [e.path for e in es]; labels += [i]*len(es)
        res[split] = files, np.array(labels, np.int64)
    return res, stamp.hexdigest()

def _read_img(f, data=None):
    "uint8 (32,32,3) RGB pixels of image file `f`, or of its bytes `data` (read from an archive: `f` names it)"
    try:
        with Image.open(f if data is None else io.BytesIO(data)) as im: return np.asarray(to_rgb32(im))
    except UnidentifiedImageError:
        raise DataError(f'not an image file: {f}; only images may sit in the class folders, remove it') from None
    except Image.DecompressionBombError as e:
        raise DataError(f'image too large to decode safely: {f} ({e}); remove it or shrink it') from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f'unreadable or truncated image: {f} ({e}); replace or remove it') from None

_PARALLEL = 4096  # images from which decoding is split across the CPU's cores: fewer decode sooner than processes start

def _decode_chunk(items):
    "uint8 (N,32,32,3) of `items`: (file, its bytes or None) pairs, decoded in order"
    x = np.empty((len(items),SIZE,SIZE,3), np.uint8)
    for i,(f,data) in enumerate(items): x[i] = _read_img(f, data)
    return x

def _decode_images(items):
    "`_decode_chunk(items)`, in one worker process a core when there are many (each image is a few Python calls)"
    if len(items) < _PARALLEL: return _decode_chunk(items)
    from fastcore.parallel import num_cpus, parallel
    if (n := min(num_cpus() or 1, 8)) < 2: return _decode_chunk(items)
    k = -(-len(items)//n)  # contiguous chunks, results in order: an error names the first bad image, as one process would
    return np.concatenate(parallel(_decode_chunk, [items[i:i+k] for i in range(0, len(items), k)], n_workers=n))

def _decode_folder(files):
    "Decoded arrays of `_folder_files` output (files on disk or in an archive)"
    res = []
    for split in ('train','test'):
        fs, y = files[split]
        # an archive's bytes travel with their names: worker processes get the images, never the whole archive
        res += [_decode_images([(str(f), f.data()) if isinstance(f, _InArchive) else (f, None) for f in fs]), y]
    return tuple(res)

class _DataUnpickler(pickle.Unpickler):
    "Unpickles plain data and numpy arrays only: a CIFAR-10 pickle needs nothing else, and nothing a file names runs."
    _OK = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'), ('numpy', 'ndarray'),
           ('numpy', 'dtype'), ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
           ('_codecs', 'encode')}  # how a Python 3 pickle of protocol 2 spells bytes
    def find_class(self, module, name):
        if (module, name) in self._OK: return super().find_class(module, name)
        raise pickle.UnpicklingError(f'it names {module}.{name}, which a CIFAR-10 pickle never holds; not loaded')

def _read_pickle(f):
    "Dict stored in a CIFAR-10 pickle `f` (Python 2 file: bytes keys, read as str), plain data only"
    try:
        with (io.BytesIO(f.data()) if isinstance(f, _InArchive) else open(f, 'rb')) as fh:
            d = _DataUnpickler(fh, encoding='bytes').load()  # encoding as the CIFAR-10 page says
    except Exception as e:
        raise DataError(f'unreadable pickle: {f} ({type(e).__name__}: {e}); get the cifar-10-batches-py files again') from None
    if not isinstance(d, dict): raise DataError(f'not a CIFAR-10 pickle: {f} holds a {type(d).__name__}, not a dict')
    return {(k.decode() if isinstance(k, bytes) else k): v for k,v in d.items()}

def _read_batch(f):
    "(x, y) of one CIFAR-10 batch pickle `f`: uint8 (N,32,32,3) and int64 (N,)"
    d = _read_pickle(f)
    if 'data' not in d or 'labels' not in d: raise DataError(f'not a CIFAR-10 batch: {f} has no data/labels entries')
    x, y = np.asarray(d['data']), np.asarray(d['labels'])
    if x.ndim != 2 or x.shape[1] != 3072 or x.dtype != np.uint8:
        raise DataError(f'bad data in {f}: {x.dtype} {x.shape}, expected uint8 (N, 3072) rows (1024 R, 1024 G, 1024 B)')
    if y.shape != (len(x),): raise DataError(f'bad labels in {f}: {y.size} labels for {len(x)} images')
    if len(y) and (y.dtype.kind not in 'iu' or y.min() < 0 or y.max() >= len(CLASSES)):
        raise DataError(f'bad labels in {f}: expected integers 0..{len(CLASSES)-1}, got {y.dtype} from {y.min()} to {y.max()}')
    return x.reshape(-1,3,32,32).transpose(0,2,3,1), y.astype(np.int64)  # rows are channel-major, row-major 32x32

def _pickle_stamp(d):
    "Change stamp (sizes, mtimes) of the pickles of the cifar-10-batches-py folder `d`, checking none is missing"
    if miss := [n for n in _BATCHES if not (d/n).is_file()]:
        raise DataError(f'incomplete cifar-10-batches-py folder: {d} lacks {", ".join(miss)}; it needs {", ".join(_BATCHES)}')
    return tuple((o.stat().st_size, o.stat().st_mtime_ns) for o in (d/n for n in _BATCHES+('batches.meta',)) if o.is_file())

def _decode_pickles(d):
    "Decoded arrays of the cifar-10-batches-py folder `d`"
    if (m := d/'batches.meta').is_file():
        names = tuple(o.decode() if isinstance(o, bytes) else o for o in _read_pickle(m).get('label_names', CLASSES))
        if names != CLASSES: raise DataError(f'not CIFAR-10: {m} names the classes {" ".join(names)}; expected {_NAMES}')
    tr = [_read_batch(d/n) for n in _BATCHES[:5]]
    x_test, y_test = _read_batch(d/'test_batch')
    x_train, y_train = np.concatenate([x for x,_ in tr]), np.concatenate([y for _,y in tr])
    for n,x in (('data_batch_1..5', x_train), ('test_batch', x_test)):
        if not len(x): raise DataError(f'no images in {d/n}; get the cifar-10-batches-py files again')
    return np.ascontiguousarray(x_train), y_train, np.ascontiguousarray(x_test), y_test

def _stem(p):
    "Name of archive `p` without its archive suffix, safe as a file name"
    n = p.name
    for s in _ARCHIVES:
        if n.lower().endswith(s): n = n[:-len(s)]; break
    return _safe(n)

def _safe(n): return re.sub(r'[^\w.-]', '_', n) or 'data'

def _alive(pid):
    "Whether process `pid` runs on this machine"
    try: os.kill(pid, 0)
    except ProcessLookupError: return False
    except (PermissionError, OverflowError, ValueError): return True
    return True

def _clean_parts(dest):
    "Remove unfinished extractions of `dest` left by dead processes of this machine"
    host = socket.gethostname()
    for p in dest.parent.glob(f'.{dest.name}.part-*'):
        h,_,pid = p.name[len(dest.name)+7:].rpartition('-')
        if h == host and pid.isdigit() and not _alive(int(pid)): shutil.rmtree(p, ignore_errors=True)

def _where(p):
    "A short hash of the resolved path `p`: cache entries of one source share it, so stale ones can be found"
    return hashlib.sha1(str(Path(p).resolve()).encode()).hexdigest()[:8]

def _drop_stale(folder, prefix, keep):
    "Remove the cache entries `folder/prefix*` other than `keep`: older versions of the same source"
    for o in folder.glob(f'{prefix}*'):
        if o != keep and not o.name.startswith('.'): shutil.rmtree(o, ignore_errors=True) if o.is_dir() else o.unlink(missing_ok=True)

def extract(arch):
    "Folder under `cache_root()` holding archive `arch` extracted, extracting it once, atomically (`load_cifar` reads archives in memory; bench.inference times files on disk)"
    st = arch.stat()
    prefix = f'{_stem(arch)}-{_where(arch)}-'
    dest = cache_root()/'extracted'/f'{prefix}{st.st_size}-{st.st_mtime_ns}'
    if dest.is_dir(): return dest
    try: dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f'cannot create the cache folder {dest.parent} ({e}); set FASTCIFAR_CACHE to a writable folder') from None
    _clean_parts(dest)
    # Extract beside `dest` and rename into place once complete: a half-finished extraction is never taken for `dest`
    tmp = dest.with_name(f'.{dest.name}.part-{socket.gethostname()}-{os.getpid()}')
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with tarfile.open(arch) as tf: tf.extractall(tmp, filter='data')  # 'data' filter: no paths outside tmp, no devices
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            if isinstance(e, OSError) and e.errno is not None:  # disk full, permissions: not the archive's fault
                raise DataError(f'cannot extract {arch} into {dest.parent} ({e}); free space or set FASTCIFAR_CACHE elsewhere') from None
            raise DataError(f'truncated or corrupt archive: {arch} ({type(e).__name__}: {e}); get it again') from None
        try: os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir(): raise  # else another process finished the same extraction first
    finally: shutil.rmtree(tmp, ignore_errors=True)
    _drop_stale(dest.parent, prefix, dest)  # the archive changed: its earlier extraction is stale
    return dest

def _is_archive(p): return p.name.lower().endswith(_ARCHIVES) or tarfile.is_tarfile(p)

_MAX_ARCHIVE = 2 << 30  # bytes of files an archive may hold: every CIFAR-10 copy holds under 200 MB, in any format

class _Archive:
    "The members of a tar archive, read in one pass into memory: regular files' bytes, folders, and any other member"
    def __init__(self, arch):
        self.arch, self.files, self.kids, self.other = arch, {}, {'': {}}, set()
        size = 0
        try:
            # a stream, read once. By hand: fastai's `untar_data` and tarfile's `extractall` write every file to disk first,
            # and writing CIFAR-10's 60,000 small files took longer than decoding them
            with tarfile.open(arch, 'r|*') as tf:
                for m in tf:
                    name = posixpath.normpath(m.name).lstrip('/')
                    if name in ('', '.') or name.split('/')[0] == '..': continue  # never part of a CIFAR-10 layout
                    if m.isfile():
                        if (size := size + m.size) > _MAX_ARCHIVE:
                            raise DataError(f'{arch} holds over {_MAX_ARCHIVE >> 30} GB of files, far more than any CIFAR-10 copy; pass the CIFAR-10 archive or folder itself')
                        self.files[name] = tf.extractfile(m).read()
                    elif not m.isdir(): self.other.add(name)  # links, devices: read without following them
                    self._add(name, m.isdir())
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as e:
            if isinstance(e, OSError) and e.errno is not None: raise DataError(f'cannot read {arch} ({e}); check the file and its permissions') from None
            raise DataError(f'truncated or corrupt archive: {arch} ({type(e).__name__}: {e}); get it again') from None
    def _add(self, name, is_dir):
        "Record `name` in its folder's entries, and its folders in theirs (an archive may list a file before its folders)"
        while name:
            parent, base = posixpath.split(name)
            kids = self.kids.setdefault(parent, {})
            if is_dir: self.kids.setdefault(name, {})
            if base in kids: return
            kids[base] = None; name, is_dir = parent, True

class _InArchive:
    "A path inside an `_Archive`, answering what `find_cifar`, `_folder_files` and the readers ask of a path on disk"
    def __init__(self, archive, inner=''): self.archive, self.inner = archive, inner
    def __truediv__(self, name): return _InArchive(self.archive, posixpath.join(self.inner, name) if self.inner else name)
    def __str__(self): return posixpath.join(str(self.archive.arch), self.inner) if self.inner else str(self.archive.arch)
    @property
    def name(self): return posixpath.basename(self.inner)
    @property
    def path(self): return self
    def is_dir(self): return self.inner in self.archive.kids
    def is_file(self): return self.inner in self.archive.files
    def scandir(self): return [self/n for n in sorted(self.archive.kids.get(self.inner, ()))]
    def stat(self):
        if self.inner in self.archive.other: raise OSError(0, 'a link or special file, not read from an archive')
        return os.stat_result((0, 0, 0, 0, 0, 0, len(self.archive.files.get(self.inner, b'')), 0, 0, 0))
    def data(self):
        if not self.is_file(): raise FileNotFoundError(f'no file {self} in the archive')
        return self.archive.files[self.inner]

def _decode_copy(kind, d):
    "Decoded arrays of the CIFAR-10 copy `find_cifar` found: (kind, folder on disk or in an archive)"
    return _decode_folder(_folder_files(d)[0]) if kind == 'folder' else _decode_pickles(d)

def _decode_archive(arch):
    "Decoded arrays of the CIFAR-10 copy inside archive `arch`, read into memory (never extracted)"
    a = _decode_copy(*find_cifar(_InArchive(_Archive(arch)), desc=arch))
    # an extraction of this archive in the cache (fastcifar's, from before it read archives in memory) is not needed
    if (ex := cache_root()/'extracted').is_dir(): _drop_stale(ex, f'{_stem(arch)}-{_where(arch)}-', None)
    return a

def _load_npz(f):
    "Arrays cached in `f`, or None if missing or not valid"
    try:
        with np.load(f) as z: a = tuple(z[k] for k in _KEYS)
    except Exception: return None
    ok = all(x.dtype == np.uint8 and x.shape[1:] == (SIZE,SIZE,3) and y.dtype == np.int64 and y.shape == (len(x),)
             for x,y in (a[:2], a[2:]))
    return a if ok else None

def _write_npz(p, arrs):
    with open(p, 'wb') as fh: np.savez(fh, **dict(zip(_KEYS, arrs)))  # a file object: np.savez adds no '.npz'

def _save_npz(f, arrs):
    "Write `arrs` to `f` atomically (temp file in the same folder, then `os.replace`)"
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(f, lambda p: _write_npz(p, arrs))
    except OSError as e:
        warnings.warn(f'could not cache decoded CIFAR-10 at {f} ({e}); it will be decoded again next time')

def _cached(key, name, decode):
    "Arrays of the source identified by `key` (kind, path, stamp of its content): from the `.npz` cache, else decoded"
    h = hashlib.sha1(repr((_VERSION,)+key).encode()).hexdigest()[:16]
    prefix = f'{_safe(name)}-{_where(key[1])}-'
    f = cache_root()/'decoded'/f'{prefix}{h}.npz'
    if (a := _load_npz(f)) is not None: return a
    a = decode()
    _save_npz(f, a)
    if f.exists(): _drop_stale(f.parent, prefix, f)  # the source changed: its earlier arrays are stale
    return a

def _download():
    "Folder of fastai's `URLs.CIFAR` extraction, downloading it if needed"
    url = _fastai('URLs').CIFAR
    try: return Path(_fastai('untar_data')(url))
    except Exception as e:
        raise DataError(f'could not download CIFAR-10 from {url} ({type(e).__name__}: {e}); offline? {_HELP}') from None

def load_cifar(source=None):
    "Decoded `Cifar` from `source` (folder, archive, pickles; default env FASTCIFAR_DATA or `URLs.CIFAR`), cached"
    source = source if source is not None else os.environ.get('FASTCIFAR_DATA') or None
    p = _download() if source is None else Path(os.path.abspath(Path(source).expanduser()))
    desc = 'URLs.CIFAR' if source is None else str(p)
    if not p.exists(): raise DataError(f'no such file or folder: {p}; {_HELP}')
    if p.is_file():
        if not _is_archive(p): raise DataError(f'not a folder or .tgz/.tar.gz archive: {p}; {_HELP}')
        st = p.stat()
        a = _cached(('archive', str(p.resolve()), st.st_size, st.st_mtime_ns), _stem(p), lambda: _decode_archive(p))
    else:
        kind, d = find_cifar(p)
        if kind == 'folder':
            files, stamp = _folder_files(d)
            a = _cached(('folder', str(d.resolve()), stamp), d.name, lambda: _decode_folder(files))
        else:
            a = _cached(('pickles', str(d.resolve()), _pickle_stamp(d)), d.name, lambda: _decode_pickles(d))
    return Cifar(*a, classes=CLASSES, source=desc)
