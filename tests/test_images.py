"One image reader for training data and inference: images as a person sees them."
import numpy as np, pytest
from PIL import Image
from fastcifar.images import read_rgb


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((32, 32, 3), np.uint8); a[:16] = 255  # bright on top
    im = Image.fromarray(a)
    ex = im.getexif(); ex[0x0112] = 3  # orientation 3: the viewer turns the stored pixels by 180 degrees
    im.save(tmp_path/'turned.jpg', exif=ex, quality=95)
    out = read_rgb(tmp_path/'turned.jpg')
    assert out[:16].mean() < 20 and out[16:].mean() > 235  # seen upright: the bright half at the bottom
    im.save(tmp_path/'plain.jpg', quality=95)
    assert read_rgb(tmp_path/'plain.jpg')[:16].mean() > 235

def test_16_bit_png_is_scaled_by_its_range(tmp_path):
    a = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))
    Image.fromarray(a).save(tmp_path/'g16.png')
    assert Image.open(tmp_path/'g16.png').mode.startswith('I')
    out = read_rgb(tmp_path/'g16.png')
    want = np.round(np.linspace(0, 255, 32)).astype(int)
    assert out.shape == (32, 32, 3) and np.abs(out[0, :, 0].astype(int) - want).max() <= 1 and (out[..., 0] == out[..., 2]).all()

@pytest.mark.parametrize('lo,hi', [(0., 1.), (-3., 5.)])
def test_float_tiff_is_scaled_by_its_range(tmp_path, lo, hi):
    a = np.tile(np.linspace(lo, hi, 32, dtype=np.float32), (32, 1))
    Image.fromarray(a, 'F').save(tmp_path/'f.tif')
    out = read_rgb(tmp_path/'f.tif')
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 255 and abs(int(out[0, 16, 0]) - round(255*16/31)) <= 1

def test_eight_bit_images_are_unchanged(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path/'a.png')
    assert np.array_equal(read_rgb(tmp_path/'a.png'), a) and read_rgb(a) is a
