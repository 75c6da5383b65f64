# Test app for tests/integration/test_wifi_portal.py: the Wi-Fi manager + setup portal on a simulated device, with short
# retry intervals. preset.json in the device filesystem (a list of [ssid, password]) is added once.
import gc
import json
import os
import time

# biggest sources first: on the host runtime (modules compiled at import, 110wK heap) the compiler's
# peak memory must come while the heap is still empty
from iotutils.server import WebServer
import iotutils.nvs
gc.collect()
import iotutils.persist  # noqa: F401
gc.collect()
from iotutils.wifi import Wifi
from iotutils.auth import verify_password
from iotutils.portal import Portal
gc.collect()

Wifi.attempt_timeout_s = 1.5
Wifi.retry_s = 1
Wifi.retry_max_s = 2
Wifi.scan_interval_s = 0.3
Wifi.ap_linger_s = 1.5
Wifi.poll_ms = 50
Wifi.scan_cache_ms = 200

app = WebServer(port=80, workers=2)
wifi = Wifi()
try:
    with open("preset.json") as f:
        preset = json.load(f)
    for ssid, pw in preset:
        wifi.add_network(ssid, pw)
    os.remove("preset.json")
except OSError:
    pass
Portal(app, wifi)


@app.route("/test/networks")
def networks(req):
    return wifi.networks()


@app.route("/test/admin")
def admin(req):
    from iotutils.persist import PersistentStr
    stored = PersistentStr("pwhash", default="", folder="admin", max_length=160).value
    return {"scheme": stored.split("$")[0], "ok": verify_password(req.query.get("pw", ""), stored)}


app.start()
wifi.start()
print("wifi-app ready")
while True:  # the Device main loop calls poll() too, beside the background thread
    wifi.poll()
    time.sleep(0.1)
