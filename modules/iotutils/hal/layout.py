# The partition table of boards/ESP32_GENERIC/partitions.csv, for devices that cannot read the
# CSV (a board has it in flash; the simulator passes it in its config). tests/integration/test_sim.py checks
# that this copy equals the CSV.
# (name, type, subtype, offset, size)
DEFAULT = (
    ("nvs", "data", "nvs", 0x9000, 0x6000),
    ("otadata", "data", "ota", 0xF000, 0x2000),
    ("phy_init", "data", "phy", 0x11000, 0x1000),
    ("ota_0", "app", "ota_0", 0x20000, 0x1D0000),
    ("ota_1", "app", "ota_1", 0x1F0000, 0x1D0000),
    ("vfs", "data", "fat", 0x3C0000, 0x40000),
)
FLASH_SIZE = 0x400000
APP_SLOTS = ("ota_0", "ota_1")


def parse_csv(text):
    """partitions.csv text -> tuple of (name, type, subtype, offset, size)."""
    rows = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        f = [x.strip() for x in line.split(",")]
        rows.append((f[0], f[1], f[2], int(f[3], 0), _size(f[4])))
    return tuple(rows)


def _size(s):
    s = s.upper()
    if s.endswith("K"):
        return int(s[:-1], 0) * 1024
    if s.endswith("M"):
        return int(s[:-1], 0) * 1024 * 1024
    return int(s, 0)
