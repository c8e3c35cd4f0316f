"""Run the ckptsurgeon CLI under an audit hook that records anything a hostile file could make us do.

Used by the security tests: ``python audited_cli.py LOG ARGS...``. After start-up, any process
spawn, code execution, dynamic import or file opened for writing is appended to LOG.
"""
import sys

log_path = sys.argv[1]
sys.argv = ["ckptsurgeon"] + sys.argv[2:]
from ckptsurgeon.cli import COMMANDS, cli, main  # noqa: E402  (imports happen before the hook arms)
from ckptsurgeon.formats import load_all  # noqa: E402

for _name in COMMANDS:  # the CLI and the format registry import lazily: load everything before arming
    cli.get_command(None, _name)
load_all()
import difflib  # noqa: E402,F401  (click imports it while matching short options)
import encodings.ascii, encodings.cp437, encodings.latin_1, encodings.raw_unicode_escape, encodings.unicode_escape, encodings.utf_8  # noqa: E401,E402,F401,E501  (stdlib codecs that zipfile and pickle import lazily)

WATCH = {"os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
         "pty.spawn", "ctypes.dlopen", "socket.connect", "webbrowser.open", "exec", "import",  # not "compile": ast.literal_eval (numpy headers) only parses
         "os.remove", "os.rename", "shutil.rmtree", "os.chmod"}
armed = []
seen = []


def hook(event, args):
    if not armed:
        return
    if event in WATCH or (event == "open" and len(args) > 1 and isinstance(args[1], str) and any(c in args[1] for c in "wax+")):
        seen.append(f"{event} {str(args)[:200]}")


sys.addaudithook(hook)
armed.append(True)
try:
    main()
finally:
    armed.clear()
    if seen:
        with open(log_path, "w") as fh:
            fh.write("\n".join(seen))
