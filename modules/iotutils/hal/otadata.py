# ESP-IDF's otadata partition: which OTA slot boots, and the state of the image in it.
#
# Two 4 KB sectors, each holding one 32-byte esp_ota_select_entry_t:
#   u32 ota_seq, u8 seq_label[20], u32 ota_state, u32 crc (esp_rom_crc32_le(UINT32_MAX, &ota_seq, 4))
# The valid entry with the highest ota_seq wins (entries marked INVALID or ABORTED are not valid);
# the slot is (ota_seq - 1) % number_of_slots. Same rules as ESP-IDF's esp_ota_ops.c and
# bootloader_utility.c, so otadata read back from a board decodes here and vice versa.
# Shared by the simulated device's hardware layer and scripts/sim.py's emulated bootloader. The
# hardware layers load it for each call (call_loaded): a device reads otadata a few times a boot
# and writes it once an update, so its code need not stay in the heap.
import struct


SECTOR = const(4096)
ENTRY_SIZE = const(32)

# esp_ota_img_states_t
STATE_NEW = const(0x0)
STATE_PENDING_VERIFY = const(0x1)
STATE_VALID = const(0x2)
STATE_INVALID = const(0x3)
STATE_ABORTED = const(0x4)
STATE_UNDEFINED = const(0xFFFFFFFF)

STATE_NAMES = {STATE_NEW: "new", STATE_PENDING_VERIFY: "pending_verify", STATE_VALID: "valid",
               STATE_INVALID: "invalid", STATE_ABORTED: "aborted", STATE_UNDEFINED: "undefined"}


try:
    from binascii import crc32 as _crc32
except ImportError:
    _crc32 = None


def rom_crc32_le(data, init=0xFFFFFFFF):
    # esp_rom_crc32_le(crc, buf, len): reflected CRC-32 (poly 0xEDB88320) with ~ on entry and
    # exit, i.e. zlib's crc32 started from `init` (ESP-IDF's otatool.py uses exactly that)
    if _crc32 is not None:
        return _crc32(data, init) & 0xFFFFFFFF
    crc = (~init) & 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return (~crc) & 0xFFFFFFFF


def encode(seq, state):
    return struct.pack("<I20sII", seq, b"\xff" * 20, state, rom_crc32_le(struct.pack("<I", seq)))


def decode(raw):
    """One 32-byte entry -> (seq, state), or None when erased or its CRC is wrong."""
    seq, _, state, crc = struct.unpack("<I20sII", raw)
    if seq == 0xFFFFFFFF or crc != rom_crc32_le(struct.pack("<I", seq)):
        return None
    return seq, state


def read_entries(flash):
    return [decode(flash.read(i * SECTOR, ENTRY_SIZE)) for i in (0, 1)]


def _selectable(e):
    return e is not None and e[1] not in (STATE_INVALID, STATE_ABORTED)


def active(flash, entries=None):
    """(sector, seq, state) of the entry that selects the boot slot, or None (nothing set: ota_0)."""
    if entries is None:
        entries = read_entries(flash)
    best = None
    for i in (0, 1):
        e = entries[i]
        if _selectable(e) and (best is None or e[0] > best[1]):
            best = (i, e[0], e[1])
    return best


def _write(flash, sector, seq, state):
    flash.erase(sector * SECTOR, SECTOR)
    flash.write(sector * SECTOR, encode(seq, state))


def slot_of_seq(seq, n_slots=2):
    return (seq - 1) % n_slots


def set_boot(flash, slot, n_slots=2):
    """esp_ota_set_boot_partition: a new entry (state NEW) in the sector that is not active,
    so a power cut while writing it leaves the current selection in place."""
    entries = read_entries(flash)
    cur = active(flash, entries)
    if cur is None:
        _write(flash, 0, slot + 1, STATE_NEW)
        return
    top = max(e[0] for e in entries if e is not None)
    i = 0
    while top > (slot + 1) % n_slots + i * n_slots:
        i += 1
    _write(flash, 1 - cur[0], (slot + 1) % n_slots + i * n_slots, STATE_NEW)


def set_state(flash, state):
    """Rewrite the active entry with a new state in its own sector (as ESP-IDF does). A cut
    between erase and write leaves the older entry selecting the previous image: safe."""
    cur = active(flash)
    if cur is not None:
        _write(flash, cur[0], cur[1], state)


def pending(flash, slot, n_slots):
    """The image in `slot` (the running one) waits for confirmation: otadata selects it, and
    its entry is PENDING_VERIFY."""
    cur = active(flash)
    return cur is not None and cur[2] == STATE_PENDING_VERIFY and slot_of_seq(cur[1], n_slots) == slot


def mark_valid(flash, slot, n_slots):
    """esp_ota_mark_app_valid_cancel_rollback for the image in `slot`: only its own entry is
    confirmed (an entry that selects another slot, a new image that never booted, is left)."""
    cur = active(flash)
    if cur is not None and slot_of_seq(cur[1], n_slots) == slot and cur[2] != STATE_VALID:
        set_state(flash, STATE_VALID)


def running_state(flash):
    cur = active(flash)
    return STATE_UNDEFINED if cur is None else cur[2]


def last_invalid_slot(flash, n_slots=2):
    """The slot of an entry marked INVALID/ABORTED that is newer than the active one: an
    update that rolled back (esp_ota_get_last_invalid_partition), else None."""
    entries = read_entries(flash)
    cur = active(flash, entries)
    for e in entries:
        if e is not None and e[1] in (STATE_INVALID, STATE_ABORTED) and (cur is None or e[0] > cur[1]):
            return slot_of_seq(e[0], n_slots)
    return None


def choose_boot(flash, image_ok, n_slots=2):
    """The bootloader's choice with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE.

    image_ok(slot) -> bool: does the slot hold a valid app image. Returns the slot to boot and
    updates otadata like ESP-IDF: PENDING_VERIFY at boot (the app never confirmed) -> ABORTED,
    fall back; NEW -> PENDING_VERIFY and boot it; an invalid image -> INVALID, fall back.
    """
    for _ in range(3):
        cur = active(flash)
        if cur is None:
            return 0 if image_ok(0) or not image_ok(1) else 1
        _, seq, state = cur
        slot = slot_of_seq(seq, n_slots)
        if state == STATE_PENDING_VERIFY:
            set_state(flash, STATE_ABORTED)
            continue
        if not image_ok(slot):
            set_state(flash, STATE_INVALID)
            continue
        if state == STATE_NEW:
            set_state(flash, STATE_PENDING_VERIFY)
        return slot
    return 0
