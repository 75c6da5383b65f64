# What Alexa's devices share with the Philips Hue v1 API: the light kinds, Hue's brightness scale
# and its dates (the name rule is iotutils.coerce.check_name: Hue's 32 characters). The protocol
# itself (the bridge's answers) is hue_api.py, loaded at the first Hue request.
import time

F_DIMMABLE = const(1)
F_COLOR = const(2)
F_WEMO = const(4)

HUE_UUID = "2f402f80-da50-11e1-9b23-"
#: hours from 1970 to this port's time epoch (2000 on the ESP32 port; 1970 on the unix port, CPython)
EPOCH_H = 262968 if time.gmtime(0)[0] == 2000 else 0
del time   # (only the line above needs it: its slot in this module's table goes to the next name)


def pct_to_bri(pct):
    """Brightness 0..100 % -> Hue bri 1..254 (0 % gives 1: "off" is the on flag)."""
    return max(1, (pct * 254 + 50) // 100)


def bri_to_pct(bri):
    """Hue bri 1..254 -> 1..100 % (exact inverse of pct_to_bri on 1..100)."""
    return max(1, (bri * 100 + 127) // 254)


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_xy(v):
    """A CIE xy colour point: a pair of numbers in 0..1 (Light.set's and Hue's xy)."""
    try:
        x, y = v
    except (TypeError, ValueError):
        return False
    return is_num(x) and is_num(y) and 0 <= x <= 1 and 0 <= y <= 1
