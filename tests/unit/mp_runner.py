"""Run unit test modules under MicroPython: every top-level test_* function, in file order.

usage: micropython mp_runner.py test_module [test_module ...]
Prints one line per test (PASS/FAIL/SKIP) and a closing 'N passed, N failed, N skipped'.
Exit status 1 if any test failed.
"""
import sys

from mpunit import SkipTest


def run(module_name):
    mod = __import__(module_name)
    counts = [0, 0, 0]
    names = [n for n in dir(mod) if n.startswith("test_")]
    # dir() order is hash order on MicroPython: sort for a stable run
    names.sort()
    for name in names:
        fn = getattr(mod, name)
        if not callable(fn):
            continue
        try:
            fn()
            print("PASS %s.%s" % (module_name, name))
            counts[0] += 1
        except SkipTest as e:
            print("SKIP %s.%s: %s" % (module_name, name, e))
            counts[2] += 1
        except Exception as e:
            print("FAIL %s.%s" % (module_name, name))
            sys.print_exception(e)
            counts[1] += 1
    return counts


def main():
    total = [0, 0, 0]
    for module_name in sys.argv[1:]:
        c = run(module_name)
        for i in range(3):
            total[i] += c[i]
    print("%d passed, %d failed, %d skipped" % tuple(total))
    if total[1]:
        sys.exit(1)


main()
