# All-or-nothing writes of many values to the store (persist's import): a power cut, a full partition
# or a MemoryError in the middle must not leave some of them.
#
# Before the first write, the old value of every key (or "absent") goes to the journal: undo chunks of
# a few entries each ("u0", "u1", ...: no large block of RAM is needed), then the header "import" =
# the number of chunks (one NVS item: written whole or not at all; only with it is the journal valid).
# Then the values are written, then the header and the chunks are erased. A failure rolls the old
# values back at once; if even that fails (or the power went), recover(), which persist runs at the
# first access to the store after a boot, rolls them back before anything is read.
import json

from iotutils import store
from iotutils._compat import log

try:
    from binascii import a2b_base64, b2a_base64
except ImportError:  # pragma: no cover
    a2b_base64 = b2a_base64 = None

FOLDER = "iotutils"   # internal: persist hides it (secret), the admin page never shows it
_HEADER = "import"
_RESET = "reset"
_CHUNK = const(16)    # journal entries per undo chunk
#: [True] while a journal could not be rolled back in this boot: the next access tries again
pending = [False]


def write_all(plan):
    """Write every (folder, name, NVS type code or None, raw value or None to delete it) that
    plan() yields, or none of them (values already stored as they are need neither a journal
    entry nor a write). plan is called twice (the keys first, for the journal; then the values),
    so that neither the journal nor the values need to be held in RAM all at once. Raises what
    the store raised, after rolling back."""
    chunks = 0
    try:
        # (inside the try: a write that failed may still have stored part of the journal, which must
        # not outlive this call, or a later boot would roll back newer changes)
        undo = []
        for folder, name, code, raw in plan():
            old = store.get_typed(folder, name)
            if _unchanged(old, code, raw):
                continue  # nothing to undo, and the store skips writing what it already holds
            undo.append([folder, name] + ([None, None] if old is None else _journal_value(old)))
            if len(undo) == _CHUNK:
                store.set(FOLDER, "u%d" % chunks, json.dumps(undo).encode())
                chunks += 1
                undo = []
        if undo:
            store.set(FOLDER, "u%d" % chunks, json.dumps(undo).encode())
            chunks += 1
        elif not chunks:
            return  # every value is stored as it is: nothing to write
        undo = None
        store.set(FOLDER, _HEADER, chunks)  # the journal is valid from here on
        for folder, name, code, raw in plan():
            if raw is None:
                store.delete(folder, name)
            else:
                try:
                    store.set(folder, name, raw, code)
                except ValueError as e:   # the store's own limits (a value too long for it): said by name
                    raise ValueError("%s/%s: %s" % (folder, name, e.args[0] if e.args else "refused by the store"))
        store.delete(FOLDER, _HEADER)  # the writes are done once this is
    except BaseException:  # MemoryError, OSError (no space, flash), KeyboardInterrupt: roll back
        undo = None
        try:
            _rollback(chunks)
        except BaseException:
            pending[0] = True  # the journal stays: the next access to the store rolls back again
        raise
    try:
        _drop_chunks(chunks)
    except Exception:  # stray chunks without a header mean nothing: recover() erases them
        pending[0] = True


def _unchanged(old, code, raw):
    # a settings file imported back onto the device it came from changes few values: those
    # unchanged take no room in the journal, which would otherwise need room for every value
    if old is None or raw is None:
        return old is raw
    if isinstance(raw, int):
        return isinstance(old[1], int) and old[0] == code and old[1] == raw
    if isinstance(raw, str):
        return isinstance(old[1], str) and old[1] == raw
    return isinstance(old[1], (bytes, bytearray)) and old[1] == raw


def recover():
    """Undo a write_all() that did not finish, or finish a factory reset (persist.factory_reset)
    that did not (run before the store is read after a boot)."""
    if store.get(FOLDER, _RESET) is not None:
        erase_all()
        log("persist: an interrupted factory reset was finished")
        pending[0] = False
        return
    chunks = store.get(FOLDER, _HEADER)
    if chunks is None:
        for k in store.keys(FOLDER):  # chunks of a journal without its header
            store.delete(FOLDER, k)
    else:
        _rollback(chunks)
        log("persist: an interrupted import was rolled back")
    pending[0] = False


def erase_all():
    """Factory reset: every folder, finished by recover() at the next boot if the power fails
    part-way (a half reset could keep the Wi-Fi network and lose the admin password)."""
    store.set(FOLDER, _RESET, 1)   # erased last: while it is there, the reset is not done
    for folder in store.folders():
        if folder != FOLDER:
            store.erase_folder(folder)
    store.erase_all()


def _journal_value(typed):
    code, raw = typed
    if isinstance(raw, (bytes, bytearray)):
        return [code, "b:" + b2a_base64(bytes(raw)).decode().strip()]
    if isinstance(raw, str):
        return [code, "s:" + raw]
    return [code, raw]


def _drop_chunks(chunks):
    for i in range(chunks):
        store.delete(FOLDER, "u%d" % i)


def _rollback(chunks):
    """Put back the old values of a journal with `chunks` undo chunks, then erase it."""
    try:
        import gc
        gc.collect()  # a MemoryError may have brought us here: make room for the way back
    except ImportError:
        pass
    for i in range(chunks):
        raw = store.get(FOLDER, "u%d" % i)
        if raw is None:
            continue  # the journal never got this far (no header either): nothing of it was applied
        for folder, name, code, val in json.loads(raw):
            if code is None:
                store.delete(folder, name)
                continue
            if isinstance(val, str):
                val = a2b_base64(val[2:]) if val.startswith("b:") else val[2:]
            store.set(folder, name, val, code if isinstance(val, int) else None)
    store.delete(FOLDER, _HEADER)
    _drop_chunks(chunks)
