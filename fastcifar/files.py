"Files a run writes: atomic writes, and run folders that are owned, locked and replaced only after success."
import errno, fcntl, json, os, shutil, time
from pathlib import Path

__all__ = ['MARKER', 'RunFolderError', 'atomic_write', 'is_run', 'RunFolder', 'no_space']

MARKER = '.fastcifar-run'  # written into a folder when a run creates it: only such folders are resumed, replaced or removed
_LOCK = '.lock'            # flock'ed by the run that trains in the folder

class RunFolderError(Exception):
    "A run folder that cannot be used: the message is one line saying what to do."

def atomic_write(path, write):
    "Call `write(tmp_path)`, then rename onto `path`, so a kill at any moment leaves the old file or the new one."
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    try: write(tmp); os.replace(tmp, path)
    finally:
        if tmp.exists(): tmp.unlink()

def no_space(e):
    "Whether `e` is the OS saying the disk (or quota) is full."
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)

def is_run(d):
    "Whether folder `d` was made by a fastcifar run (its marker; or, from before markers, its checkpoint)."
    return (Path(d)/MARKER).is_file() or (Path(d)/'checkpoint.pth').is_file()

def _contents(d): return {e.name for e in os.scandir(d)} - {_LOCK}

def _lock(d):
    "An open file descriptor holding an exclusive lock on run folder `d`, or None if another process holds it."
    fd = os.open(Path(d)/_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError: os.close(fd); return None
    return fd

def _new_dir(parent, name):
    "Create `parent/name`, or `name-2`, `name-3`, ... : the first that no other process created first (mkdir is atomic)."
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        d = parent/(name if i == 1 else f'{name}-{i}')
        try: d.mkdir(); return d
        except FileExistsError: continue
    raise RunFolderError(f'no free run folder name {name}-N in {parent}; pass --out')

class RunFolder:
    "The folder a run writes, held exclusively (an OS lock) while it trains; `commit()` after success."
    def __init__(self, out=None, resume=False, overwrite=False, root='runs'):
        self.fd, self.aside, self.created = None, None, False
        try: self._open(out, resume, overwrite, Path(root))
        except PermissionError as e: raise RunFolderError(f'cannot write the run folder {e.filename or out} (permission denied); choose a writable --out') from None
        except OSError as e:
            if no_space(e): raise RunFolderError(f'no space left on the device of {out or root}; free space and start again') from None
            raise RunFolderError(f'cannot use the run folder {out or root} ({e.strerror or e}); choose another --out') from None

    def _open(self, out, resume, overwrite, root):
        if out is None:
            if resume: raise RunFolderError('--resume needs --out: the run folder to continue')
            self.path, self.created = _new_dir(root, time.strftime('%Y%m%d-%H%M%S')), True; self._claim(); return
        self.path = p = Path(out)
        if p.exists() and not p.is_dir(): raise RunFolderError(f'--out {p} is a file, not a folder; choose another --out')
        if resume:
            if not p.is_dir() or not is_run(p): raise RunFolderError(f'--resume: no checkpoint in {p} (not a fastcifar run folder); start a new run without --resume')
            self._hold()
            if not (p/'checkpoint.pth').is_file(): raise RunFolderError(f'--resume: no checkpoint in {p} (the run ended before its first epoch); start it again without --resume')
            return
        if not p.is_dir(): p.mkdir(parents=True, exist_ok=True); self.created = True
        user = lambda: _contents(p) and not is_run(p)  # a user's folder: never written into, never removed
        if user(): raise RunFolderError(f'--out {p} is not empty and not a fastcifar run folder; choose a new or empty folder')
        self._hold()  # then look again: another run may have finished in it since
        # only the marker: a run killed before its first epoch wrote nothing there, so starting again loses nothing
        if _contents(p) <= {MARKER}: self._mark(); return
        if user(): raise RunFolderError(f'--out {p} is not empty and not a fastcifar run folder; choose a new or empty folder')
        if not overwrite: raise RunFolderError(f'run folder {p} already holds a run; pass --resume to continue it, --overwrite to replace it, or another --out')
        # the old run is not in use: move it aside, and keep it until the new run has finished
        self.aside = _new_dir(p.parent, f'.{p.name}.replaced')
        self.aside.rmdir(); os.rename(p, self.aside)
        p.mkdir(); self._claim()

    def _hold(self):
        if self.fd is not None: os.close(self.fd)
        self.fd = _lock(self.path)
        if self.fd is None: raise RunFolderError(f'another run is using {self.path}; wait for it to finish or choose another --out')

    def _claim(self):
        "Lock a new or empty folder and mark it as a run's."
        self._hold(); self._mark()

    def _mark(self):
        atomic_write(self.path/MARKER, lambda f: f.write_text(json.dumps(dict(created=time.strftime('%Y-%m-%dT%H:%M:%S%z'), pid=os.getpid())) + '\n'))

    def commit(self):
        "The run has finished: the run it replaced, if any, goes."
        if self.aside is not None: shutil.rmtree(self.aside); self.aside = None

    def abandon(self):
        "The run failed before writing anything: leave things as they were (a new folder goes, a replaced run comes back)."
        if self.fd is None or _contents(self.path) - {MARKER}: return
        (self.path/MARKER).unlink(missing_ok=True); (self.path/_LOCK).unlink(missing_ok=True)
        self.close()
        if self.created or self.aside: self.path.rmdir()
        if self.aside: os.rename(self.aside, self.path); self.aside = None

    def close(self):
        if self.fd is not None: os.close(self.fd); self.fd = None
    def __enter__(self): return self
    def __exit__(self, *exc): self.close()
