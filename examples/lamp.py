# A complete smart lamp: persistent on/brightness/colour, an Alexa dimmable light, its own page,
# plus everything iotutils.Device brings (Wi-Fi + setup portal, admin page, OTA, watchdog), and
# Home Assistant over MQTT when a broker is set (`make sim SIM_MQTT=mqtt://127.0.0.1:1883`, the
# admin page's MQTT section, or MQTT below).
# `make sim` runs it on the simulated device; on a board, copy it as main.py.
import iotutils
from iotutils.persist import PersistentBool, PersistentRange, PersistentRGB
from iotutils.server import HTTPError

try:
    from os import getenv   # the simulator passes `make sim SIM_MQTT=...` as IOTUTILS_MQTT
except ImportError:         # a board: write your broker here, or set it on the admin page
    def getenv(name):
        return None
MQTT = getenv("IOTUTILS_MQTT")   # e.g. "mqtt://user:password@192.168.1.5"; None: the admin page's

on = PersistentBool("on", default=False, folder="lamp")
brightness = PersistentRange("bri", 0, 100, default=60, folder="lamp")
colour = PersistentRGB("rgb", default=(255, 180, 100), folder="lamp")

dev = iotutils.Device(name="lamp", ota_repo="iotutils/lamp-firmware", mqtt=MQTT)
# in Home Assistant (with the Alexa light below, diagnostics, restart and the firmware)
dev.expose(on, "Lamp")
dev.expose(brightness, "Brightness")


shown = [None]   # (on, brightness, colour) the LED shows


def drive_led():
    # a real lamp would set PWM duty here; the simulator prints what the LED would show
    shown[0] = (on.value, brightness.value, colour.value)
    r, g, b = colour.value
    pct = brightness.value if on.value else 0   # whole numbers: the same duty on every runtime
    print("LED rgb=(%d,%d,%d)" % (r * pct // 100, g * pct // 100, b * pct // 100))


def show_on_alexa():
    # what Alexa sees follows the lamp; brightness 0 is a dark lamp, so Alexa sees it off
    bri = brightness.value
    light.set(on=on.value and bri > 0, brightness=bri if bri > 0 else None)


def alexa_changed(light):
    # Alexa (Hue client) changed the light: the lamp follows, and remembers it
    on.value = light.on
    brightness.value = light.brightness
    drive_led()


def apply(changes):
    """Validate every field first, then store them: a bad value changes nothing (ValueError)."""
    new = []
    for key, var in (("on", on), ("brightness", brightness), ("rgb", colour)):
        if key in changes:
            new.append((var, var.coerce(changes[key])))
    for var, value in new:
        var.value = value
    show_on_alexa()
    drive_led()


light = dev.alexa.add("Desk lamp", on_change=alexa_changed, dimmable=True)
show_on_alexa()


@dev.every(250)
def follow():
    # a change made elsewhere (Home Assistant, the admin page's variables) reaches the LED and Alexa
    if (on.value, brightness.value, colour.value) != shown[0]:
        show_on_alexa()
        drive_led()


def _html(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#39;")


@dev.app.route("/lamp", methods=("GET", "POST"))
def lamp_page(req):
    if req.method == "POST":
        form = req.form() if req.body else {}
        # an unticked checkbox sends nothing: the hidden on=off before it stands in (the last value wins)
        changes = {}
        if "on" in form:
            changes["on"] = form["on"]
        if "bri" in form:
            changes["brightness"] = form["bri"]
        if "rgb" in form:
            changes["rgb"] = form["rgb"]
        try:
            apply(changes)
        except (ValueError, TypeError) as e:
            return "<p>%s</p><a href=/lamp>back</a>" % _html(e), 400
    r, g, b = colour.value
    return ("<!doctype html><meta name=viewport content='width=device-width'><title>Lamp</title>"
            "<h1>%s</h1><form method=post><input type=hidden name=on value=off>"
            "<label><input type=checkbox name=on value=on %s> on</label><br>"
            "<input type=range name=bri min=0 max=100 value=%d><br>"
            "<input type=color name=rgb value='#%02x%02x%02x'><br><button>Set</button></form>"
            "<p><a href=/admin>admin</a>") % (_html(dev.name), "checked" if on.value else "",
                                             brightness.value, r, g, b)


@dev.app.route("/api/lamp", methods=("GET", "PUT"))
def lamp_api(req):
    if req.method == "PUT":
        try:
            data = req.json()
            if not isinstance(data, dict):
                raise ValueError('expected a JSON object like {"on": true, "brightness": 40, "rgb": "#ff8000"}')
            apply(data)
        except HTTPError as e:  # the body's own trouble keeps its status: bad JSON 400, too large 413, too slow 408
            return {"error": e.reason}, e.status
        except (ValueError, TypeError) as e:
            return {"error": str(e)}, 400
    return {"on": on.value, "brightness": brightness.value, "rgb": list(colour.value)}


drive_led()
dev.run()
