"""iotutils._compat.unload: modules leave sys.modules and their package, come back on the next import;
the OTA network code relies on it, with OTAError kept in a module that stays."""
import sys

from iotutils._compat import unload


def test_an_unloaded_module_leaves_and_comes_back_on_import():
    import iotutils.ota.release  # noqa: F401
    import iotutils.ota as ota_pkg

    first = sys.modules["iotutils.ota.release"]
    assert getattr(ota_pkg, "release", None) is first
    unload("iotutils.ota.release")
    assert "iotutils.ota.release" not in sys.modules
    assert "release" not in dir(ota_pkg)            # the package's attribute went too
    from iotutils.ota.release import Source

    again = sys.modules["iotutils.ota.release"]
    assert again is not first and again.Source is Source
    unload("iotutils.ota.release", "iotutils.not_loaded_at_all")   # a name never loaded: nothing to do


def test_ota_error_is_one_class_across_unloads_of_the_client():
    from iotutils.ota import OTAError
    from iotutils.ota.client import OTAError as from_client

    assert from_client is OTAError
    unload("iotutils.ota.client")
    from iotutils.ota.client import Http, OTAError as reloaded

    assert reloaded is OTAError and Http.timeout == 15
    try:
        raise reloaded("x")
    except OTAError as e:
        assert str(e) == "x"
