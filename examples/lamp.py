# A complete smart lamp: persistent on/brightness/colour, an Alexa dimmable light, its own page,
# plus everything iotutils.Device brings (Wi-Fi + setup portal, admin page, OTA, watchdog).
# `make sim` runs it on the simulated device; on a board, copy it as main.py.
import iotutils
from iotutils.persist import PersistentBool, PersistentRange, PersistentRGB

on = PersistentBool("on", default=False, folder="lamp")
brightness = PersistentRange("bri", 0, 100, default=60, folder="lamp")
colour = PersistentRGB("rgb", default=(255, 180, 100), folder="lamp")

dev = iotutils.Device(name="lamp", ota_repo="iotutils/lamp-firmware")


def drive_led():
    # a real lamp would set PWM duty here; the simulator prints what the LED would show
    r, g, b = colour.value
    k = brightness.value / 100 if on.value else 0
    print("LED rgb=(%d,%d,%d)" % (int(r * k), int(g * k), int(b * k)))


def alexa_changed(light):
    on.value = light.on
    brightness.value = light.brightness
    drive_led()


light = dev.alexa.add("Desk lamp", on_change=alexa_changed, dimmable=True)
light.set(on=on.value, brightness=brightness.value)


@dev.app.route("/lamp", methods=("GET", "POST"))
def lamp_page(req):
    if req.method == "POST":
        form = req.form() if req.body else {}
        try:
            if "on" in form:
                on.value = form["on"]
            if "bri" in form:
                brightness.value = form["bri"]
            if "rgb" in form:
                colour.value = form["rgb"]
        except ValueError as e:
            return "<p>%s</p><a href=/lamp>back</a>" % e, 400
        light.set(on=on.value, brightness=brightness.value)
        drive_led()
    r, g, b = colour.value
    return ("<!doctype html><meta name=viewport content='width=device-width'><title>Lamp</title>"
            "<h1>%s</h1><form method=post>"
            "<label><input type=checkbox name=on value=on %s> on</label><br>"
            "<input type=range name=bri min=0 max=100 value=%d><br>"
            "<input type=color name=rgb value='#%02x%02x%02x'><br><button>Set</button></form>"
            "<p><a href=/admin>admin</a>") % (dev.name, "checked" if on.value else "",
                                             brightness.value, r, g, b)


@dev.app.route("/api/lamp", methods=("GET", "PUT"))
def lamp_api(req):
    if req.method == "PUT":
        data = req.json()
        try:
            if "on" in data:
                on.value = data["on"]
            if "brightness" in data:
                brightness.value = data["brightness"]
            if "rgb" in data:
                colour.value = data["rgb"]
        except ValueError as e:
            return {"error": str(e)}, 400
        light.set(on=on.value, brightness=brightness.value)
        drive_led()
    return {"on": on.value, "brightness": brightness.value, "rgb": list(colour.value)}


drive_led()
dev.run()
