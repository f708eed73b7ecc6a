"""For `fl run`: what a user's script sees of its cluster and its directory; exits with the code given."""

import json
import sys
from pathlib import Path

import fl

cluster = fl.connect()
here = Path(__file__).parent
try:
    (here / "written-next-to-the-script").write_text("x")
    writable = True
except OSError:
    writable = False
(fl.results_dir() / "probe.json").write_text(
    json.dumps({"players": len(cluster.players), "argv": sys.argv[1:], "script_dir_writable": writable})
)
sys.exit(int(sys.argv[1]))
