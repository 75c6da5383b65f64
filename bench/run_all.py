#!/usr/bin/env python3
"""`make bench`: every bench/bench_*.py in one run, each printing its rivals side by side with
ratios. Benchmarks are measurements, not tests: a slow result is printed, never a failure;
a benchmark that cannot run here says why and the others go on."""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    only = sys.argv[1:]
    names = sorted(f for f in os.listdir(HERE) if f.startswith("bench_") and f.endswith(".py"))
    if only:
        names = [n for n in names if any(o in n for o in only)]
    failed = []
    for name in names:
        print("=" * 78)
        print(name)
        print("=" * 78, flush=True)
        t0 = time.time()
        rc = subprocess.call([sys.executable, os.path.join(HERE, name)], cwd=os.path.dirname(HERE))
        print("(%s: %.1f s%s)\n" % (name, time.time() - t0, "" if rc == 0 else ", exit %d" % rc), flush=True)
        if rc:
            failed.append(name)
    if failed:
        print("benchmarks that could not complete:", ", ".join(failed))


if __name__ == "__main__":
    main()
