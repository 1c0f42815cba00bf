"""serve_screenshot.py: (re)make docs/serve.png, the README's picture of `shoestring serve`'s page.

    python tools/serve_screenshot.py CHECKPOINT [--out docs/serve.png]

Starts the server on a free port, opens the page in headless chromium (selenium + Debian's
chromium-driver) at phone size, has a short seeded conversation, saves a screenshot.
"""
import argparse
import os
import shutil
import threading

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "docs", "serve.png"))
    ap.add_argument("--turns", nargs="+", default=["hello there", "what do you like to do?"])
    ap.add_argument("--seed", default="3")
    ap.add_argument("--model-id", default="bundled-corpus model")
    args = ap.parse_args()

    import shoestring
    from shoestring import serve
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    srv = serve.make_server(shoestring.load(args.checkpoint), port=0, model_id=args.model_id)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=390,640",
              "--hide-scrollbars"):
        opts.add_argument(a)
    b = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        b.get(srv.url)
        b.find_element(By.TAG_NAME, "summary").click()
        b.find_element(By.ID, "seed").send_keys(args.seed)
        b.find_element(By.TAG_NAME, "summary").click()
        box = b.find_element(By.ID, "input")
        for i, text in enumerate(args.turns):
            box.send_keys(text, Keys.ENTER)
            WebDriverWait(b, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".meta")) > i)
        b.save_screenshot(args.out)
    finally:
        b.quit()
        srv.shutdown()
    print("wrote", args.out)


if __name__ == "__main__":
    main()
