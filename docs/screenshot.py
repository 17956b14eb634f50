"""docs/demo.png: the demo with the best shipped model classifying one of its examples, seen by headless Chromium.

`python docs/screenshot.py [IMAGE]` (needs `chromium` and `chromium-driver` from apt, and fastcifar[app,dev]).
"""
import shutil, socket, sys, time
from pathlib import Path
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from fastcifar.app import EXAMPLES, launch, make_demo

def main(image=EXAMPLES/'cat.png', out=Path(__file__).resolve().parent/'demo.png'):
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    demo = make_demo()
    launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which('chromium') or shutil.which('chromium-browser')
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--window-size=1280,1050'): opts.add_argument(a)
    d = webdriver.Chrome(options=opts, service=webdriver.chrome.service.Service(shutil.which('chromedriver')))
    try:
        d.get(demo.local_url)
        wait = WebDriverWait(d, 120)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#upload input[type=file]'))
        d.find_element(By.CSS_SELECTOR, '#upload input[type=file]').send_keys(str(Path(image).resolve()))
        wait.until(lambda d: '%' in d.find_element(By.ID, 'prediction').text)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#gradcam img'))
        time.sleep(1)  # the heat map's fade-in
        d.save_screenshot(str(out))
        print(f'wrote {out}: {d.find_element(By.ID, "prediction").text.splitlines()[:2]}')
    finally:
        d.quit(); demo.close()

if __name__ == '__main__': main(*sys.argv[1:2])
