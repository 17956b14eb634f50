"Run folders: owned (a marker), locked while a run trains, replaced only after success; atomic writes."
import multiprocessing as mp, os, pytest
from pathlib import Path
from fastcifar.files import MARKER, RunFolder, RunFolderError, atomic_write, is_run

def test_new_folder_is_marked_and_locked(tmp_path):
    with RunFolder(tmp_path/'a'/'run') as f:
        assert f.path == tmp_path/'a'/'run' and (f.path/MARKER).is_file() and is_run(f.path)
        (f.path/'history.csv').write_text('epoch\n0\n')
        with pytest.raises(RunFolderError, match='another run is using'): RunFolder(f.path, overwrite=True)
        with pytest.raises(RunFolderError, match='another run is using'): RunFolder(f.path)
    with pytest.raises(RunFolderError, match='already holds a run'): RunFolder(tmp_path/'a'/'run')  # lock released, still a run

def test_a_users_folder_is_never_touched(tmp_path):
    proj = tmp_path/'proj'; (proj/'mydata').mkdir(parents=True); (proj/'notes.txt').write_text('mine')
    before = sorted(p.name for p in proj.rglob('*'))
    for kw in (dict(), dict(overwrite=True), dict(resume=True)):
        with pytest.raises(RunFolderError, match='not a fastcifar run folder'): RunFolder(proj, **kw)
    assert sorted(p.name for p in proj.rglob('*')) == before and (proj/'notes.txt').read_text() == 'mine'
    (tmp_path/'file').write_text('x')
    with pytest.raises(RunFolderError, match='is a file'): RunFolder(tmp_path/'file')
    assert (tmp_path/'file').read_text() == 'x'

def test_overwrite_keeps_the_old_run_until_commit(tmp_path):
    with RunFolder(tmp_path/'r') as f: (f.path/'history.csv').write_text('old')
    with RunFolder(tmp_path/'r', overwrite=True) as f:
        assert not (f.path/'history.csv').exists() and f.aside.is_dir() and (f.aside/'history.csv').read_text() == 'old'
        (f.path/'history.csv').write_text('new')
        aside = f.aside
    assert aside.is_dir()  # closed without commit (failed, killed): the old run is still there
    with RunFolder(tmp_path/'r', overwrite=True) as f: f.commit()
    assert not any(p.name.startswith('.r.replaced') for p in tmp_path.iterdir() if p != aside)

def test_abandon_restores_what_was_there(tmp_path):
    with RunFolder(tmp_path/'new') as f: f.abandon()
    assert not (tmp_path/'new').exists()
    with RunFolder(tmp_path/'r') as f: (f.path/'history.csv').write_text('old')
    with RunFolder(tmp_path/'r', overwrite=True) as f: f.abandon()  # the replacement failed before writing anything
    assert (tmp_path/'r'/'history.csv').read_text() == 'old' and [p.name for p in tmp_path.iterdir()] == ['r']

def _start(root, q):
    try: q.put(str(RunFolder(root=root).path))
    except Exception as e: q.put(repr(e))

def test_folders_without_out_never_collide(tmp_path):
    q = mp.get_context('fork').Queue()
    ps = [mp.get_context('fork').Process(target=_start, args=(tmp_path, q)) for _ in range(6)]
    for p in ps: p.start()
    for p in ps: p.join(30)
    names = [q.get(timeout=5) for _ in ps]
    assert len(set(names)) == 6 and all(Path(n).parent == tmp_path and (Path(n)/MARKER).is_file() for n in names), names

def test_resume_needs_a_run_and_its_checkpoint(tmp_path):
    with pytest.raises(RunFolderError, match='no checkpoint'): RunFolder(tmp_path/'none', resume=True)
    with RunFolder(tmp_path/'r'): pass
    with pytest.raises(RunFolderError, match=r'no checkpoint in .* start it again without --resume'): RunFolder(tmp_path/'r', resume=True)

def test_a_run_killed_before_its_first_epoch_starts_again(tmp_path):
    "A folder holding only its run's marker lost nothing: a new run takes it without --overwrite, and sets nothing aside."
    RunFolder(tmp_path/'r').close()  # the process was killed before it wrote anything
    with RunFolder(tmp_path/'r') as f:
        assert f.aside is None and sorted(p.name for p in f.path.iterdir()) == sorted(['.lock', MARKER])
        (f.path/'history.csv').write_text('epoch\n0\n')
    with pytest.raises(RunFolderError, match='already holds a run'): RunFolder(tmp_path/'r')  # once it wrote, it is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ['r'] and (tmp_path/'r'/'history.csv').read_text() == 'epoch\n0\n'

def test_read_only_out_is_one_line(tmp_path, monkeypatch):
    ro = tmp_path/'ro'; ro.mkdir(); ro.chmod(0o500)
    if os.geteuid() == 0:  # root writes anywhere: the OS's answer for a read-only folder, as a user gets it
        def denied(self, *a, **k): raise PermissionError(13, 'Permission denied', str(self))
        monkeypatch.setattr(Path, 'mkdir', denied)
    with pytest.raises(RunFolderError, match='permission denied') as e: RunFolder(ro/'run')
    assert str(ro/'run') in str(e.value) and not (ro/'run').exists()

def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    f = tmp_path/'a.txt'; f.write_text('old')
    def boom(p): p.write_text('half'); raise OSError(28, 'No space left on device')
    with pytest.raises(OSError): atomic_write(f, boom)
    assert f.read_text() == 'old' and [p.name for p in tmp_path.iterdir()] == ['a.txt']
