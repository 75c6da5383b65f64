# Device app for tests/integration/test_sim.py: reports what the hardware layer says, then obeys commands
# written to fs/cmd (reset, crash, confirm, set_boot:<slot>, wdt, exit).
import os
import time

from iotutils import hal

import gc
gc.collect()
print("BOOT slot=%s cause=%s ver=%s pending=%s rolled_back=%s heap=%d free=%d" % (
    hal.ota_running(), hal.reset_cause(), hal.config()["version"], hal.ota_pending(),
    hal.ota_rolled_back(), hal.heap_total(), hal.mem_free()))

while True:
    try:
        with open("cmd") as f:
            cmd = f.read().strip()
        os.remove("cmd")
    except OSError:
        time.sleep(0.02)
        continue
    print("CMD", cmd)
    if cmd == "reset":
        hal.reset()
    elif cmd == "crash":
        raise RuntimeError("crash requested")
    elif cmd == "confirm":
        hal.ota_mark_valid()
        print("CONFIRMED pending=%s" % hal.ota_pending())
    elif cmd.startswith("set_boot:"):
        hal.ota_set_boot(cmd.split(":", 1)[1])
        print("SET_BOOT done")
    elif cmd == "wdt":
        hal.wdt_start(300)
        print("WDT armed")
        while True:
            time.sleep(1)
    elif cmd == "exit":
        break
