"""Check that the detector's tests catch the mutations that would change the paper's algorithm.

Each mutation edits one line of a copy of the repository (the working tree is never touched) and runs
the detector's test files there; a mutation that no test fails is printed as SURVIVED and makes the
command exit 1. The unmutated copy must pass first.

    python tools/mutation_check.py            # about a minute on 2 threads

Mutations (issue 18's acceptance list, plus the tie rule of Algorithm 1):
- the threshold's strict ``<`` (and ``>`` for distances) made ``<=`` / ``>=``;
- the population std (ddof = 0) made the sample std (ddof = 1);
- ⌊L/2⌋ made ⌈L/2⌉ in the layer of interest's search range;
- LOI-2..LOI shifted to LOI-3..LOI-1, and shortened to LOI-1..LOI;
- Algorithm 1's ties kept by the last layer instead of the first.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_detector_math.py", "tests/test_layer_of_interest.py", "tests/test_detector_properties.py",
         "tests/test_defenses_interface.py"]
FILE = "analysis/detection.py"
MUTATIONS = {
    "threshold < becomes <=": ("scores_np < mu - tau * sigma", "scores_np <= mu - tau * sigma"),
    "threshold > becomes >= (distances)": ("scores_np > mu + tau * sigma", "scores_np >= mu + tau * sigma"),
    "population std becomes sample std": ("scores.std(ddof=0)", "scores.std(ddof=1)"),
    "floor(L/2) becomes ceil(L/2)": ("half = n_layers // 2", "half = (n_layers + 1) // 2"),
    "LOI-2..LOI becomes LOI-3..LOI-1": ("(self.loi_[t] - 2, self.loi_[t] - 1, self.loi_[t])",
                                       "(self.loi_[t] - 3, self.loi_[t] - 2, self.loi_[t] - 1)"),
    "LOI-2..LOI becomes LOI-1..LOI": ("(self.loi_[t] - 2, self.loi_[t] - 1, self.loi_[t])",
                                      "(self.loi_[t] - 1, self.loi_[t])"),
    "LOI ties go to the last layer": ("if diff > best_diff:", "if diff >= best_diff:"),
}


def run_tests(copy: Path) -> bool:
    """True when the detector's tests pass in ``copy`` (its own ``analysis`` package first on the path)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TESTS],
                          cwd=copy, env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"}, capture_output=True)
    return done.returncode == 0


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", "results", "*.ipynb", "docs", "notebooks"))
        if not run_tests(copy):
            print("the unmutated copy fails its tests: fix them first")
            return 2
        original = (copy / FILE).read_text()
        survived = []
        for name, (old, new) in MUTATIONS.items():
            if original.count(old) != 1:
                print(f"{name}: the line to mutate was not found once in {FILE}; update this script")
                return 2
            (copy / FILE).write_text(original.replace(old, new))
            caught = not run_tests(copy)
            print(f"{'caught   ' if caught else 'SURVIVED '} {name}")
            if not caught:
                survived.append(name)
        (copy / FILE).write_text(original)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
