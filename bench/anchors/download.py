"""P8 anchor, first half: download the whole file, as `hf_hub_download` does (one GET, streamed to a local file
in 10 MiB chunks, no fsync), before anything can be read from it. Usage: python download.py URL FILE"""
import shutil
import sys
import urllib.request

with urllib.request.urlopen(sys.argv[1]) as resp, open(sys.argv[2], "wb") as out:
    shutil.copyfileobj(resp, out, 10 << 20)
