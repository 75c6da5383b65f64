# Device app for tests/integration/test_admin.py and the browser tests: everything on, a few typed variables
# and an Alexa light, OTA pointed at the fake GitHub given in IOTUTILS_TEST_API (if any).
import os

import iotutils
from iotutils.persist import PersistentRange, PersistentRGB, PersistentStr

bri = PersistentRange("bri", 0, 100, default=50, folder="lamp")
rgb = PersistentRGB("rgb", default=(255, 128, 0), folder="lamp")
label = PersistentStr("label", default="desk", folder="lamp", max_length=16)

api = os.getenv("IOTUTILS_TEST_API")
dev = iotutils.Device(name="admintest", ota_repo="acme/lamp" if api else None, ota_api=api,
                      ota_pubkey=os.getenv("IOTUTILS_TEST_PUBKEY"),  # the fake GitHub signs with it
                      ota_allow_http=bool(api) and api.startswith("http:"))
dev.alexa.add("Desk lamp", dimmable=True)
if os.getenv("IOTUTILS_SESSION_TTL_S"):   # (test_admin: a session's cookie renewed while it is used)
    from iotutils.admin import Admin
    Admin.session_ttl_s = int(os.getenv("IOTUTILS_SESSION_TTL_S"))
dev.start()
print("READY")
dev.run()
