# SPDX-License-Identifier: GPL-2.0-or-later
"""Guest-side scenario runner: lab.py boots the guest and runs this with /usr/bin/python3.

Imports scapy once, then runs each named scenario (test/lab/scenarios/NAME.py, which
defines run(lab)) in order, tearing its namespaces down after it. Each check prints one
PASS/FAIL line; lab.py counts them and prints the closing line. Exit 0 iff every check
passed and at least one ran.
"""

import argparse
import importlib.util
import subprocess
import sys
import time
import traceback
from pathlib import Path

LAB_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(LAB_DIR))

import labkit  # noqa: E402


def load_scenario(name):
    path = LAB_DIR / "scenarios" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"lab_scenario_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not callable(getattr(mod, "run", None)):
        raise RuntimeError(f"{path} defines no run(lab)")
    return mod


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir")
    ap.add_argument("--source-root")
    ap.add_argument("scenarios", nargs="+")
    args = ap.parse_args()

    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    t0 = time.monotonic()
    labkit.load_scapy()
    print(f"  # guest: kernel {Path('/proc/sys/kernel/osrelease').read_text().strip()}, "
          f"scapy imported in {time.monotonic() - t0:.1f} s", flush=True)

    passed = failed = 0
    for name in args.scenarios:
        print(f"== scenario {name} ==", flush=True)
        t1 = time.monotonic()
        lab = labkit.Lab(name, build_dir=args.build_dir, source_root=args.source_root)
        try:
            load_scenario(name).run(lab)
        except Exception as e:  # a broken setup is one failed check, with the trace
            lab.check("scenario ran to the end", False, f"{type(e).__name__}: {e}")
            for line in traceback.format_exc().rstrip().splitlines():
                print(f"  | {line}", flush=True)
        finally:
            try:
                lab.teardown()
            except Exception as e:
                lab.check("teardown", False, f"{type(e).__name__}: {e}")
        if lab.passed + lab.failed == 0:
            lab.check("scenario made at least one check", False, "run(lab) reported nothing")
        passed += lab.passed
        failed += lab.failed
        print(f"  # {name} took {time.monotonic() - t1:.1f} s "
              f"({lab.passed} ok, {lab.failed} failing)", flush=True)

    if failed:
        r = subprocess.run(["dmesg"], capture_output=True, text=True)
        tail = r.stdout.strip().splitlines()[-15:]
        if tail:
            print("  # guest dmesg tail:", flush=True)
            for line in tail:
                print(f"  | {line}", flush=True)
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
