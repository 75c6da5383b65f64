# Device app for tests/integration/test_security.py: a whole device (Wi-Fi + portal, server, admin,
# OTA, Alexa with a Hue light and a WeMo socket) and an app secret of its own, declared secret.
import iotutils
from iotutils import persist
from iotutils.persist import PersistentRange, PersistentStr

persist.secret("lamp", "apikey")
bri = PersistentRange("bri", 0, 100, default=50, folder="lamp")
apikey = PersistentStr("apikey", default="", folder="lamp", max_length=64)
if not apikey.value:
    apikey.value = "lamp-api-key-4711-secret"

dev = iotutils.Device(name="sectest")
dev.alexa.add("Desk lamp", dimmable=True)
dev.alexa.add("Fan", wemo=True)
dev.start()
print("READY")
dev.run()
