"""The `dnnspec` package re-exports the API lazily, and each name stays the API function
even where a subpackage of the same name (`dnnspec.tune`) has been imported."""

from __future__ import annotations

import importlib

import dnnspec
from dnnspec import api


def test_dnnspec_tune_is_the_api_function_after_its_subpackage_is_imported() -> None:
    subpackage = importlib.import_module("dnnspec.tune")  # as `dnnspec tune` loads it
    assert subpackage.__name__ == "dnnspec.tune"
    assert dnnspec.tune is api.tune
    from dnnspec import tune

    assert tune is api.tune


def test_every_package_level_name_is_the_api_s() -> None:
    assert set(dnnspec.__all__) <= set(api.__all__)
    assert all(getattr(dnnspec, name) is getattr(api, name) for name in dnnspec.__all__)
