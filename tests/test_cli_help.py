"""``--help`` answers at once: the command line imports neither torch nor the experiment stack to print it."""
import subprocess
import sys


def test_help_imports_no_torch():
    code = ("import runpy, sys\n"
            "sys.argv = ['analysis', 'reproduce', '--help']\n"
            "try:\n    runpy.run_module('analysis', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in ('torch', 'analysis.experiments', 'analysis.detection') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "--only EXPERIMENT" in out
    assert out.strip().endswith("LOADED []"), out[-500:]
