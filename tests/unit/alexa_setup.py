# Shared set-up of the Alexa unit modules (test_alexa.py, test_alexa_discovery.py): the real server and
# persist modules, and on MicroPython a flash file for the store (one 24 KB RAM flash block is hard to
# find in a heap this full).
import gc

from mpunit import is_micropython, tempdir

import iotutils.server
gc.collect()
import iotutils.persist
gc.collect()
if is_micropython():
    from iotutils.hal import sim as _sim
    if not _sim.config().get("flash"):
        _sim.config()["flash"] = tempdir("alexa") + "/flash.bin"
iotutils.persist.store.keys("alexa")
gc.collect()
