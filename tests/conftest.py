import os, pytest
from pathlib import Path
from fastcifar.synthetic import write_tgz

SHARED = Path(os.environ.get('FASTCIFAR_DATA', Path(__file__).resolve().parents[2]/'shared'/'data'/'cifar10.tgz'))

@pytest.fixture(scope='session', autouse=True)
def _cache(tmp_path_factory):
    "Every test session caches extracted and decoded data in its own folder, never in the user's home."
    old = os.environ.get('FASTCIFAR_CACHE')
    os.environ['FASTCIFAR_CACHE'] = str(tmp_path_factory.mktemp('cache'))
    yield
    if old is None: os.environ.pop('FASTCIFAR_CACHE', None)
    else: os.environ['FASTCIFAR_CACHE'] = old

@pytest.fixture(scope='session')
def tiny_tgz(tmp_path_factory):
    "A learnable synthetic CIFAR-10 archive: 20 train and 5 test images a class."
    return write_tgz(tmp_path_factory.mktemp('data')/'cifar10.tgz', n_train_per_class=20, n_test_per_class=5)

@pytest.fixture(scope='session')
def shared_data():
    if not SHARED.exists(): pytest.skip(f'the shared CIFAR-10 copy is absent ({SHARED}); set FASTCIFAR_DATA to run this test')
    return SHARED
